"""The public async API: a client of the actors, over a bus.

Every state change is a typed request to the actor that owns it, which
checks it against the namespace (and tenant) it arrived under and appends
the events; every read is a request too.  The client holds no log and no
store, so it is the same in both modes: embedded (``Vmem.open``: the actors
run in this process on an in-process bus) and distributed (``Vmem.connect``:
the actors run in ``vmem serve`` processes, reached over NATS with nothing
but a URL and credentials).  Works under asyncio and trio (NATS: asyncio).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from vmem.assembly.ingest import DEFAULT_PAGE_TOKENS, ingest_requests
from vmem.assembly.profiles import DEFAULT_BUDGET
from vmem.assembly.text_input import DEFAULT_MAX_BYTES
from vmem.assembly.tokens import get_tokenizer
from vmem.client.calls import LONG_TIMEOUT
from vmem.client.reading import ReadCalls
from vmem.client.turns import TurnCalls
from vmem.errors import UsageError
from vmem.paging.handoff import grants_ns
from vmem.schemas.messages import (
    DEFAULT_SLOT_LIMIT,
    Ack,
    EmbedderReply,
    EmbedderRequest,
    EvictReply,
    EvictRequest,
    ExportReply,
    ExportRequest,
    FaultReply,
    FaultRequest,
    GrantRequest,
    ImportReply,
    ImportRequest,
    IngestReply,
    PermissionsRequest,
    PinReply,
    PinRequest,
    ReindexReply,
    ReindexRequest,
    Slot,
    SlotRequest,
    Snapshot,
)
from vmem.state.namespace import validate_namespace


class IngestResult(msgspec.Struct, frozen=True):
    ns: str
    doc_id: str
    pages: int
    bytes: int
    events: int
    duplicate: bool


class Client(TurnCalls, ReadCalls):
    """vmem's API on a bus: every method is a request to an actor (see the module docstring)."""

    async def ingest(
        self,
        ns: str,
        path: str | Path,
        *,
        page_tokens: int = DEFAULT_PAGE_TOKENS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestResult:
        """Split a UTF-8 text file into pages and send them to `ns`'s memory actor, batch by batch."""
        validate_namespace(ns)
        tok = get_tokenizer("cl100k_base")
        events = pages = 0
        duplicate = True
        doc_id = ""
        size = 0
        for batch in ingest_requests(ns, Path(path), tok, page_tokens=page_tokens, max_bytes=max_bytes):
            reply = await self._call(ns, "memory", "ingest", batch.request, IngestReply, timeout=LONG_TIMEOUT)
            duplicate = duplicate and reply.duplicate
            events += reply.events
            pages += reply.pages
            doc_id = batch.request.doc_id
            size = batch.bytes_read
            if progress is not None:
                progress(batch.bytes_read, size)
        return IngestResult(ns=ns, doc_id=doc_id, pages=pages, bytes=size, events=events, duplicate=duplicate)

    async def embedder(self, ns: str) -> str:
        """The id of the embedder the retriever uses for `ns` (e.g. ``minilm-l6-v2/384``).

        :class:`~vmem.errors.EmbedderMismatch` if `ns` was indexed with
        another one: ask before writing to learn that up front.
        """
        validate_namespace(ns)
        return (await self._call(ns, "retriever", "embedder", EmbedderRequest(ns=ns), EmbedderReply)).embedder

    async def reindex(self, ns: str, *, embedder: str = "",
                      progress: Callable[[int, int], None] | None = None) -> ReindexReply:
        """Rebuild `ns`'s vector index with the retriever's embedder, and record that embedder for `ns`.

        The way to change a namespace's embedder: open with the new one
        (``Vmem.open(..., embedder=...)``, ``--embedder``) and re-index.
        `embedder`, if given, is the id the retriever must be using (refused
        otherwise).  Runs in steps of a few seconds; `progress` hears (log
        sequence reached, log end) after each.  The reply is the last step's,
        with the embedder recorded before as `previous`.
        """
        validate_namespace(ns)
        first = reply = await self._call(ns, "retriever", "reindex", ReindexRequest(ns=ns, start=True, embedder=embedder),
                                         ReindexReply, timeout=LONG_TIMEOUT)
        while True:
            if progress is not None:
                progress(reply.through_seq, reply.last_seq)
            if reply.done:
                return msgspec.structs.replace(reply, previous=first.previous)
            # Later steps name the embedder the first one used, so no other retriever continues them.
            reply = await self._call(ns, "retriever", "reindex", ReindexRequest(ns=ns, embedder=first.embedder),
                                     ReindexReply, timeout=LONG_TIMEOUT)

    async def slots(self, ns: str) -> dict[str, Slot]:
        """The working context of `ns`: each slot's value, version, limit and whether it is read-only."""
        return dict((await self.state(ns)).slots)

    async def define_slot(self, ns: str, label: str, *, limit: int = DEFAULT_SLOT_LIMIT, value: str = "", readonly: bool = False) -> None:
        """Create (or redefine) a working-context slot."""
        validate_namespace(ns)
        await self._call(ns, "memory", "slot", SlotRequest(ns=ns, label=label, limit=limit, value=value, readonly=readonly), Ack)

    async def set_permissions(self, ns: str, allowed: Sequence[str]) -> None:
        """Limit the memory functions the model may call in `ns` (empty: all of them)."""
        validate_namespace(ns)
        await self._call(ns, "memory", "permissions", PermissionsRequest(ns=ns, allowed=tuple(allowed)), Ack)

    async def handoff_export(self, ns: str) -> Snapshot:
        """A snapshot of pointers (resident ids, summaries, slot versions), recorded as an event."""
        validate_namespace(ns)
        return (await self._call(ns, "memory", "export", ExportRequest(ns=ns), ExportReply)).snapshot

    async def handoff_import(self, snap: Snapshot, ns: str) -> int:
        """Import another agent's snapshot into `ns`; its blocks page in lazily.  Returns the pointers taken.

        Only the snapshot's id and source are sent: the pointers come from the
        export the source recorded under that id.
        """
        validate_namespace(ns)
        if snap.source_ns == ns:
            raise UsageError(f"{ns} cannot import its own hand-off")
        reply = await self._call(ns, "memory", "import",
                                 ImportRequest(ns=ns, source_ns=snap.source_ns, snapshot_id=snap.snapshot_id), ImportReply)
        return reply.pointers

    async def grant(self, tenant: str, to_tenant: str, *, agents: str = "*") -> None:
        """Let `to_tenant` import hand-offs from `tenant`'s agents (an event in `tenant/_grants`)."""
        ns = grants_ns(tenant)
        validate_namespace(ns)
        await self._call(ns, "memory", "grant", GrantRequest(ns=ns, to_tenant=to_tenant, agents=agents), Ack)

    async def revoke(self, tenant: str, to_tenant: str) -> None:
        """Withdraw a grant; later imports, and page-ins of earlier ones, into `to_tenant` are refused."""
        ns = grants_ns(tenant)
        validate_namespace(ns)
        await self._call(ns, "memory", "grant", GrantRequest(ns=ns, to_tenant=to_tenant, revoke=True), Ack)

    async def fault(self, ns: str, *, query: str = "", block_ids: Sequence[str] = (), budget: int = DEFAULT_BUDGET,
                    tokenizer: str = "cl100k_base", fault_id: str | None = None) -> FaultReply:
        """Raise a page fault: page in what `query` finds and/or `block_ids`, evicting what no longer fits."""
        if not query.strip() and not block_ids:
            raise UsageError("a fault needs a query or block ids")
        return await self._call(ns, "pager", "fault", FaultRequest(
            ns=ns, fault_id=fault_id or f"c{uuid.uuid4().hex}", budget=budget, query=query, block_ids=tuple(block_ids),
            tokenizer=tokenizer,
        ), FaultReply)

    async def evict(self, ns: str, block_ids: Sequence[str]) -> EvictReply:
        """Evict resident blocks (pinned ones are refused); evicted pages are summarised."""
        return await self._call(ns, "pager", "evict", EvictRequest(ns=ns, block_ids=tuple(block_ids)), EvictReply)

    async def pin(self, ns: str, block_ids: Sequence[str]) -> PinReply:
        """Pin blocks: resident from now on, never evicted."""
        return await self._call(ns, "pager", "pin", PinRequest(ns=ns, block_ids=tuple(block_ids)), PinReply)

    async def unpin(self, ns: str, block_ids: Sequence[str]) -> PinReply:
        """Unpin blocks: they stay resident until evicted."""
        return await self._call(ns, "pager", "pin", PinRequest(ns=ns, block_ids=tuple(block_ids), pin=False), PinReply)
