"""The memory actor: what enters a namespace outside a turn.

Documents (ingest batches), working-context slots, permissions, grants and
hand-offs arrive here as requests, are checked against the namespace and
tenant they arrived under (the subject), and are appended as events.  The
decisions are library functions (:mod:`vmem.assembly.ingest`, :mod:`vmem.agent.settings`,
:mod:`vmem.paging.handoff`); this actor gathers their inputs and appends.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio.to_thread

from vmem.actors.runtime import Caller, Route
from vmem.actors.writer import Writer
from vmem.agent.settings import grant_events, permission_events, slot_events
from vmem.assembly.ingest import ingest_events
from vmem.assembly.tokens import get_tokenizer, known_tokenizers
from vmem.errors import UnknownNamespace, UsageError
from vmem.paging.handoff import check_grant, export_snapshot, grants_ns, import_events
from vmem.schemas.events import BlockWritten
from vmem.schemas.messages import (
    Ack,
    ExportReply,
    ExportRequest,
    GrantRequest,
    ImportReply,
    ImportRequest,
    IngestReply,
    IngestRequest,
    PermissionsRequest,
    SlotRequest,
    SyncReply,
    SyncRequest,
)
from vmem.storage.home import Home
from vmem.storage.view import Draft

INGEST_BYTES = 8 * 2**20
SYNC_TIMEOUT = 3600.0


class Memory:
    name = "memory"
    queue = "memory"
    concurrency = 1

    def __init__(self, home: Home, writer: Writer, caller: Caller) -> None:
        self.home = home
        self.writer = writer
        self.call = caller

    def routes(self) -> Mapping[str, Route]:
        return {
            "ingest": Route(self.ingest, IngestRequest, max_bytes=INGEST_BYTES),
            "slot": Route(self.slot, SlotRequest),
            "permissions": Route(self.permissions, PermissionsRequest),
            "grant": Route(self.grant, GrantRequest),
            "export": Route(self.export, ExportRequest),
            "import": Route(self.import_, ImportRequest),
        }

    async def ingest(self, req: IngestRequest) -> IngestReply:
        """One batch of a document's pages; the last one also has the retriever index the namespace."""
        events, result = await self.writer.commit(
            req.ns, lambda d: _added(d, ingest_events(d.state, req)), key=f"ingest:{req.doc_id}:{req.batch}"
        )
        pages = {e.block_id: e.text for e in events if isinstance(e, BlockWritten)}
        if pages and result is not None and not result.duplicate:
            # Counted now, off any turn's path: a page's first fault would count it otherwise.
            await anyio.to_thread.run_sync(self._count_pages, req.ns, pages)
        indexed = 0
        if req.final:
            sync = await self.call(req.ns, "retriever", "sync", SyncRequest(ns=req.ns), SyncReply, timeout=SYNC_TIMEOUT)
            indexed = sync.indexed
        duplicate = result is None or result.duplicate
        return IngestReply(pages=len(req.pages), events=len(events), duplicate=duplicate, indexed=indexed)

    def _count_pages(self, ns: str, pages: dict[str, str]) -> None:
        for name in known_tokenizers():
            tok = get_tokenizer(name)
            self.home.store.cache_tokens(name, ns, {b: tok.count(text) for b, text in pages.items()})

    async def slot(self, req: SlotRequest) -> Ack:
        _out, result = await self.writer.commit(req.ns, lambda d: d.add(slot_events(req)))
        return Ack(seq=result.last_seq if result else 0)

    async def permissions(self, req: PermissionsRequest) -> Ack:
        _out, result = await self.writer.commit(req.ns, lambda d: d.add(permission_events(req)))
        return Ack(seq=result.last_seq if result else 0)

    async def grant(self, req: GrantRequest) -> Ack:
        _out, result = await self.writer.commit(req.ns, lambda d: d.add(grant_events(req)))
        return Ack(seq=result.last_seq if result else 0)

    async def export(self, req: ExportRequest) -> ExportReply:
        view = self.home.view(req.ns)
        await view.catch_up()
        if view.pos == 0:
            raise UnknownNamespace(f"namespace {req.ns!r} has no events: nothing to hand off")

        def decide(draft: Draft):  # type: ignore[no-untyped-def]
            snap, events = export_snapshot(draft.state, req.ns, draft.view.pos)
            if snap.snapshot_id not in draft.state.exports:
                draft.add(events)
            return snap

        snap, _result = await self.writer.commit(req.ns, decide)
        return ExportReply(snapshot=snap)

    async def import_(self, req: ImportRequest) -> ImportReply:
        """Import a snapshot: its pointers are taken from the source's recorded export, never from the caller.

        The grant is checked first, so a tenant learns nothing of another's
        snapshots (not even whether one exists) without it.
        """
        grants = self.home.view(grants_ns(req.source_ns.split("/")[0]))
        await grants.catch_up()
        source_grants = grants.state if grants.pos else None
        check_grant(req.source_ns, req.ns, source_grants)
        source = self.home.view(req.source_ns)
        await source.catch_up()
        exported = source.state.exports.get(req.snapshot_id)
        if exported is None:
            raise UsageError(f"snapshot {req.snapshot_id!r} was never exported from {req.source_ns}; "
                             f"use the output of `vmem handoff export --ns {req.source_ns}`")
        events = import_events(req.ns, req.source_ns, exported, source.state, source_grants)
        _out, result = await self.writer.commit(req.ns, lambda d: d.add(events), key=f"handoff-import:{req.snapshot_id}")
        return ImportReply(pointers=len(exported.blocks), duplicate=bool(result and result.duplicate))


def _added(draft: Draft, events):  # type: ignore[no-untyped-def]
    draft.add(events)
    return events
