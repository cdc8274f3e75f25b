"""The pager actor: starts turns, decides what is resident, resolves page faults, drives packing.

A turn's first request carries the user's message: the pager starts the
turn, then (attempt 0) pages in for the turn's query as an implicit page
fault: it asks the retriever for candidates, decides the resident set with
:func:`vmem.paging.decisions.decide_fault` (score-aware or LRU), and appends the turn's
start, the fault, the loads, the evictions and the resolution in one
transaction, as of the state it decided on.  Then the packer packs.
Explicit faults (a query or block ids, from the model or from a pipeline),
evictions and pins go the same way.  Evicted pages are summarised in the
same transaction (extractive, vmem.paging.summaries); their full text stays
in the store, reloadable by id.  A full message queue is flushed through a
compressor job (abstractive with a model).  Pinned blocks are
never evicted.  The decisions are library functions; this module gathers
their inputs and appends what they return.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from vmem.actors.runtime import Caller, Route
from vmem.actors.writer import Writer
from vmem.bus.jobs import JobQueue
from vmem.errors import UsageError, VmemError
from vmem.paging.decisions import (
    begin_turn,
    decide_evict,
    decide_fault,
    decide_pin,
    evicted_pages,
    import_copies,
    job_digest,
    query_refs,
    queue_pressure,
    search_request,
    unresolved_fault,
)
from vmem.paging.draft_source import DraftSource
from vmem.paging.handoff import grants_ns
from vmem.paging.select import Policy, Selection
from vmem.paging.summaries import eviction_summary
from vmem.schemas.events import ErrorRaised, Event, PageFaultRaised, QueueFlushed, SummaryCommitted, TurnStarted
from vmem.schemas.messages import (
    CompressJob,
    EvictReply,
    EvictRequest,
    FaultReply,
    FaultRequest,
    PackReply,
    PackRequest,
    PinReply,
    PinRequest,
    SearchReply,
    TurnRequest,
)
from vmem.state.fold import State
from vmem.storage.home import Home
from vmem.storage.view import Draft


class Pager:
    name = "pager"
    queue = "pager"
    concurrency = 1

    def __init__(self, home: Home, writer: Writer, caller: Caller, jobs: JobQueue, *, policy: Policy = "score") -> None:
        self.home = home
        self.writer = writer
        self.call = caller
        self.jobs = jobs
        self.policy: Policy = policy

    def routes(self) -> Mapping[str, Route]:
        return {
            "turn": Route(self.turn, TurnRequest),
            "fault": Route(self.fault, FaultRequest),
            "evict": Route(self.evict, EvictRequest),
            "pin": Route(self.pin, PinRequest),
        }

    async def _search(self, ns: str, query: str, budget: int) -> SearchReply:
        if not query.strip():
            return SearchReply(candidates=())
        request = search_request(self.home.view(ns).state, ns, query, budget)
        return await self.call(ns, "retriever", "search", request, SearchReply)

    def _fault_in(
        self, draft: Draft, found: SearchReply, *, fault_id: str, turn: int, attempt: int, budget: int,
        tokenizer: str, query: str, explicit: tuple[str, ...], source: str, raise_event: bool, summary_job: str,
    ) -> tuple[Selection, tuple[str, ...]]:
        """Decide a fault on the draft's state and add its events (none when nothing changes for a pager fault).

        The summary of the pages it evicts is added to the same draft
        (:func:`vmem.paging.summaries.eviction_summary`), as job `summary_job`;
        returns the selection and the summary's id (if any).
        """
        blocks = DraftSource(self.home.store, draft)
        events, sel = decide_fault(
            blocks, draft.ns, draft.state, fault_id=fault_id, turn=turn, attempt=attempt, budget=budget,
            tokenizer=tokenizer, candidates=found.candidates, explicit=explicit, policy=self.policy,
            query=query, source_kind=source, raise_event=raise_event,
        )
        summary: list[Event] = []
        if not raise_event or sel.load or sel.evict:
            draft.add(events)
            pages = evicted_pages(draft.state, sel.evict)
            summary = eviction_summary(blocks, draft.ns, pages, job_id=summary_job, turn=turn)
            draft.add(summary)
        return sel, tuple(e.summary_id for e in summary if isinstance(e, SummaryCommitted))

    async def _flush(self, ns: str, *, turn: int, budget: int, tokenizer: str) -> None:
        """Memory pressure on the message queue: warn at 70% of its share, flush at 100%.

        Only once the new recursive summary is committed does the queue drop
        the flushed messages; if summarising fails, the queue stays whole (the
        packer still keeps the prompt in budget) and the flush is tried again
        next turn.
        """
        state = self.home.view(ns).state
        pressure = queue_pressure(self.home.store, state, ns, turn=turn, budget=budget, tokenizer=tokenizer)
        if pressure.warn:
            await self.writer.commit(ns, lambda d: None if d.state.pressure_warned else d.add(pressure.warn))
        if not pressure.flush:
            return
        previous = state.conversation_summary
        job = CompressJob(ns=ns, job_id=f"flush:{job_digest(pressure.flush)}",
                          sources=((previous,) if previous else ()) + pressure.flush, turn=turn, scope="conversation")
        try:
            done = await self.jobs.submit(job)
        except VmemError as exc:
            failed = ErrorRaised(ns=ns, turn=turn, where="pager.flush", code="summary_failed",
                                 message=f"queue not flushed, will retry: {exc.message}")
            await self.writer.append(ns, [failed])
            return
        flushed = QueueFlushed(ns=ns, turn=turn, flushed=pressure.flush, summary_id=done.summary_id, previous_summary=previous)
        await self.writer.commit(
            ns, lambda d: None if d.state.conversation_summary == done.summary_id else d.add([flushed]),
            key=f"flushed:{job.job_id}",
        )

    async def _page_in_imports(self, ns: str, turn: int, ids: list[str], *, load: bool) -> None:
        """Copy hand-off pointers' blocks from their source (grant checked again), and load them if asked."""
        sources = {self.home.view(ns).state.imports.get(b) for b in ids} - {None}
        grants: dict[str, State] = {}
        for src in sorted(sources):  # type: ignore[type-var]
            tenant = src.split("/")[0]
            view = self.home.view(grants_ns(tenant))
            await view.catch_up()
            grants[tenant] = view.state
            await self.home.view(src).catch_up()  # its blocks are in the store
        await self.writer.commit(ns, lambda d: d.add(
            import_copies(self.home.store, d.state, ns, ids, turn=turn, load=load, grants=grants).events))

    async def turn(self, req: TurnRequest) -> PackReply:
        """Start the turn (with `begin`), page in for its query (attempt 0), then pack via the packer.

        The common case is one transaction: the search runs first, then the
        turn's start and its page-in are decided together on one draft (the
        message is excluded from the search either way: it is in the queue).
        When the queue must be flushed or hand-off pointers paged in first,
        the start is committed alone and the steps follow in order.
        """
        ns = req.ns
        turn = req.turn
        sel: Selection | None = None
        summaries: tuple[str, ...] = ()
        errors: tuple[str, ...] = ()
        paged = False
        if req.begin is not None:
            begin = req.begin
            if begin.mode == "ask":
                await self.home.require_namespace(ns)  # a question needs something to answer from
            state = self.home.view(ns).state
            found: SearchReply | None = None
            if req.attempt == 0 and req.query and not state.import_resident:
                found = await self._search(ns, req.query, req.budget)
                errors = found.errors

            def start(draft: Draft) -> tuple[int, tuple[Selection, tuple[str, ...]] | None]:
                number, events = begin_turn(draft.state, ns, begin, budget=req.budget)
                draft.add(events)
                if found is None:
                    return number, None
                source = DraftSource(self.home.store, draft)
                pressure = queue_pressure(source, draft.state, ns, turn=number, budget=req.budget, tokenizer=req.tokenizer)
                if pressure.flush:  # the flush goes first: what it frees may be paged in
                    return number, None
                draft.add(pressure.warn)
                return number, self._fault_in(
                    draft, found, fault_id=f"t{number}p", turn=number, attempt=0, budget=req.budget,
                    tokenizer=req.tokenizer, query=req.query, explicit=query_refs(draft.state, req.query),
                    source="pager", raise_event=True, summary_job=f"evict:t{number}p",
                )

            (turn, decided), result = await self.writer.commit(ns, start, key=f"begin:{begin.key}" if begin.key else None)
            paged = decided is not None
            if decided is not None:
                sel, summaries = decided
            if result is not None and result.duplicate:  # a retried begin: the turn it started the first time
                first = await self.home.log.read(ns, after=result.first_seq - 1, limit=result.last_seq - result.first_seq + 1)
                turn = next(s.event.turn for s in first if isinstance(s.event, TurnStarted))
                # Paged in by that same append, or (after a flush) still to do, under its own key.
                sel, summaries = None, ()
                paged = any(isinstance(s.event, PageFaultRaised) for s in first)
        else:
            state = (await self.home.require_namespace(ns)).state
            if turn < 1 or turn > state.turn:
                raise UsageError(f"turn {turn} of {ns} has not started (turns so far: 1..{state.turn}); begin a turn first")
        if req.attempt == 0 and not paged:
            pending = list(self.home.view(ns).state.import_resident)
            if pending:
                await self._page_in_imports(ns, turn, pending, load=True)
            await self._flush(ns, turn=turn, budget=req.budget, tokenizer=req.tokenizer)
            if req.query:
                found = await self._search(ns, req.query, req.budget)
                errors = found.errors

                def page_in(draft: Draft) -> tuple[Selection, tuple[str, ...]]:
                    return self._fault_in(
                        draft, found, fault_id=f"t{turn}p", turn=turn, attempt=0, budget=req.budget,
                        tokenizer=req.tokenizer, query=req.query, explicit=query_refs(draft.state, req.query),
                        source="pager", raise_event=True, summary_job=f"evict:t{turn}p",
                    )

                (sel, summaries), _result = await self.writer.commit(ns, page_in, key=f"fault:t{turn}p")
        packed = await self.call(
            ns, "packer", "pack",
            PackRequest(ns=ns, turn=turn, attempt=req.attempt, budget=req.budget, profile=req.profile,
                        tokenizer=req.tokenizer, candidates=sel.trace if sel else (), retriever_errors=errors),
            PackReply,
        )
        packed = msgspec.structs.replace(packed, turn=turn)
        if sel is None or not (sel.load or sel.evict):
            return packed
        return msgspec.structs.replace(packed, fault=True, loaded=sel.load, evicted=sel.evict, summaries=summaries)

    async def fault(self, req: FaultRequest) -> FaultReply:
        """Resolve an explicit fault: a query to search for and/or block ids to load."""
        ns = req.ns
        state = (await self.home.require_namespace(ns)).state
        turn = req.turn or state.turn
        imported = [b for b in req.block_ids if b in state.imports]
        if imported:
            await self._page_in_imports(ns, turn, imported, load=False)
        unknown = [b for b in req.block_ids if b not in self.home.view(ns).state.blocks]
        if unknown:
            error = f"no such block in {ns}: {', '.join(unknown)}"
            await self.writer.commit(ns, lambda d: d.add(unresolved_fault(ns, fault_id=req.fault_id, turn=turn, error=error)),
                                     key=f"fault:{req.fault_id}")
            return FaultReply(loaded=(), evicted=(), error=error)
        found = await self._search(ns, req.query, req.budget)
        (sel, summaries), _result = await self.writer.commit(
            ns,
            lambda d: self._fault_in(
                d, found, fault_id=req.fault_id, turn=turn, attempt=0, budget=req.budget, tokenizer=req.tokenizer,
                query=req.query, explicit=tuple(req.block_ids), source="model", raise_event=False,
                summary_job=f"evict:{req.fault_id}",
            ),
            key=f"fault:{req.fault_id}",
        )
        error = ""
        if not sel.load:
            error = f"nothing more to load for {req.query!r}: no page that is not resident matches and fits"
            await self.writer.append(ns, [ErrorRaised(ns=ns, turn=turn, where="pager.fault", code="fault_unresolved", message=error)])
        return FaultReply(loaded=sel.load, evicted=sel.evict, summaries=summaries, error=error)

    async def evict(self, req: EvictRequest) -> EvictReply:
        """Evict blocks on request; pinned blocks are refused (an error event says so)."""
        state = (await self.home.require_namespace(req.ns)).state
        turn = req.turn or state.turn

        def decide(draft: Draft):  # type: ignore[no-untyped-def]
            decision = _added(draft, decide_evict(draft.state, req.ns, req.block_ids, turn=turn))
            pages = evicted_pages(draft.state, decision.evicted)
            summary = eviction_summary(DraftSource(self.home.store, draft), req.ns, pages,
                                       job_id=f"evict:t{turn}:{job_digest(pages)}", turn=turn)
            draft.add(summary)
            return decision, tuple(e.summary_id for e in summary if isinstance(e, SummaryCommitted))

        (decision, summaries), _result = await self.writer.commit(req.ns, decide)
        return EvictReply(evicted=decision.evicted, refused=decision.refused, summaries=summaries,
                          error="pinned blocks cannot be evicted" if decision.refused else "")

    async def pin(self, req: PinRequest) -> PinReply:
        """Pin blocks (they become resident and are never evicted) or unpin them."""
        state = (await self.home.require_namespace(req.ns)).state
        turn = req.turn or state.turn

        def decide(draft: Draft) -> tuple[tuple[str, ...], tuple[str, ...]]:
            events, changed, unknown = decide_pin(draft.state, req.ns, req.block_ids, pin=req.pin, turn=turn)
            draft.add(events)
            return changed, unknown

        (changed, unknown), _result = await self.writer.commit(req.ns, decide)
        return PinReply(changed=changed, unknown=unknown)


def _added(draft: Draft, decision):  # type: ignore[no-untyped-def]
    draft.add(decision.events)
    return decision
