"""Messages of the memory actor: documents, slots, permissions, grants and hand-offs."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from vmem.schemas.messages.bounds import (
    DEFAULT_SLOT_LIMIT,
    MAX_LABEL,
    MAX_PAGE_TEXT,
    MAX_PAGES,
    MAX_SLOT,
    BlockRefs,
    Count,
    Msg,
    Name,
    Ns,
    Seq,
    TurnNo,
)


class PageIn(msgspec.Struct, frozen=True, array_like=True):
    """One page of a document, as the client's splitter made it."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_PAGE_TEXT)]
    heading: Annotated[str, Meta(max_length=256)] = ""


class IngestRequest(Msg, tag="ingest", kw_only=True):
    """One batch of a document's pages, in order.

    `doc_id` names the document (the client uses its content hash) and
    `batch` numbers the batches from 0, so a batch sent twice commits once.
    `first_page` is the page number of the batch's first page; the last batch
    has `final` set and the document's `total_pages` and `bytes`.
    """

    ns: Ns
    doc_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{16,64}$")]
    source: Annotated[str, Meta(max_length=256)]
    batch: Count
    first_page: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    pages: Annotated[tuple[PageIn, ...], Meta(max_length=MAX_PAGES)]
    final: bool = False
    total_pages: Count = 0
    bytes: Annotated[int, Meta(ge=0, le=2**40)] = 0


class IngestReply(Msg, tag="ingest_reply", kw_only=True):
    pages: int
    events: int
    duplicate: bool
    indexed: int = 0


class SlotRequest(Msg, tag="slot", kw_only=True):
    """Define (or redefine) a working-context slot."""

    ns: Ns
    label: Annotated[str, Meta(min_length=1, max_length=MAX_LABEL)]
    limit: Annotated[int, Meta(ge=1, le=MAX_SLOT)] = DEFAULT_SLOT_LIMIT
    value: Annotated[str, Meta(max_length=MAX_SLOT)] = ""
    readonly: bool = False


class PermissionsRequest(Msg, tag="permissions", kw_only=True):
    """The memory functions the model may call in a namespace (empty: all of them)."""

    ns: Ns
    allowed: Annotated[tuple[Name, ...], Meta(max_length=64)] = ()


class GrantRequest(Msg, tag="grant", kw_only=True):
    """Sent on ``vmem.<tenant>._grants.memory.grant``: `tenant` lets `to_tenant` import its hand-offs."""

    ns: Ns
    to_tenant: Annotated[str, Meta(min_length=1, max_length=64)]
    agents: Annotated[str, Meta(min_length=1, max_length=4096)] = "*"
    revoke: bool = False


class Ack(Msg, tag="ack", kw_only=True):
    seq: int = 0


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What `vmem handoff export` prints: pointers into the source namespace, not payloads.

    Only `snapshot_id` and `source_ns` are trusted on import: the importing
    side finds the `HandoffExported` event with that id in the source's log
    and takes the pointers from there, never from the file.
    """

    format: str = "vmem-handoff/1"
    snapshot_id: Annotated[str, Meta(max_length=64)] = ""
    source_ns: Ns
    through_seq: Seq
    resident: BlockRefs = ()
    summaries: BlockRefs = ()
    slots: Annotated[tuple[tuple[Annotated[str, Meta(max_length=MAX_LABEL)], int], ...], Meta(max_length=256)] = ()
    turn: TurnNo = 0


class ExportRequest(Msg, tag="export", kw_only=True):
    ns: Ns


class ExportReply(Msg, tag="export_reply", kw_only=True):
    snapshot: Snapshot


class ImportRequest(Msg, tag="import", kw_only=True):
    """Import the snapshot `snapshot_id` exported by `source_ns` into `ns`."""

    ns: Ns
    source_ns: Ns
    snapshot_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{24}$")]


class ImportReply(Msg, tag="import_reply", kw_only=True):
    pointers: int
    duplicate: bool = False
