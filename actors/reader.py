"""The reader actor: every read is a request, answered for the caller's namespace only.

Events (a range, or the last n), a block, a turn's prompt traces, the live
state's summary, a replay, and a tenant's namespaces.  Only events that pass
the stored-event checks are returned, as the view folds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import aclosing

from vmem.actors.runtime import Route
from vmem.agent.replies import resolve
from vmem.assembly.pack import pack_state
from vmem.errors import UnknownBlock, UnknownTurn, UsageError
from vmem.paging.handoff import GRANTS_AGENT
from vmem.paging.redo import PagerChecks
from vmem.schemas.events import EVENT_BY_TAG, PromptPacked
from vmem.schemas.messages import (
    BlockReply,
    BlockRequest,
    NamespacesReply,
    NamespacesRequest,
    PromptReply,
    PromptRequest,
    ReadReply,
    ReadRequest,
    ReplayReport,
    ReplayRequest,
    StateReply,
    StateRequest,
    StoredEvent,
    TailRequest,
    TracesReply,
    TracesRequest,
)
from vmem.state.fold import state_hash
from vmem.storage.home import Home
from vmem.storage.replay import replay, state_at
from vmem.storage.view import checked_batches

TENANT_AGENT = "_tenant"
"""The agent token of tenant-wide requests: ``vmem.<tenant>._tenant.reader.namespaces``."""
READ_BYTES = 4 * 2**20  # a read reply stays under the bus's payload limit


class Reader:
    name = "reader"
    queue = "reader"
    concurrency = 2

    def __init__(self, home: Home) -> None:
        self.home = home

    def routes(self) -> Mapping[str, Route]:
        return {
            "read": Route(self.read, ReadRequest),
            "tail": Route(self.tail, TailRequest),
            "block": Route(self.block, BlockRequest),
            "traces": Route(self.traces, TracesRequest),
            "state": Route(self.state, StateRequest),
            "replay": Route(self.replay, ReplayRequest),
            "namespaces": Route(self.namespaces, NamespacesRequest),
            "prompt": Route(self.prompt, PromptRequest),
        }

    async def read(self, req: ReadRequest) -> ReadReply:
        """Up to `limit` events after `after` (of the given types), never more than a reply can carry.

        `through` is how far the read looked (events of other types and
        skipped records included): the next read starts after it.
        """
        view = await self.home.require_namespace(req.ns)
        unknown = sorted(set(req.kinds) - set(EVENT_BY_TAG))
        if unknown:
            raise UsageError(f"unknown event types {unknown}; known: {', '.join(sorted(EVENT_BY_TAG))}")
        kinds = {EVENT_BY_TAG[k] for k in req.kinds}
        out: list[StoredEvent] = []
        size = 0
        through = req.after
        batches = checked_batches(self.home.log, req.ns, after=req.after, batch=min(req.limit, 1024), on_reject=_ignore)
        async with aclosing(batches):
            async for batch, covered in batches:
                for stored in batch:
                    if len(out) >= req.limit or size > READ_BYTES:
                        return ReadReply(events=tuple(out), through=through, head=view.pos)
                    through = stored.seq
                    if kinds and type(stored.event) not in kinds:
                        continue
                    out.append(stored)
                    size += _size(stored)
                through = covered
        return ReadReply(events=tuple(out), through=through, head=max(view.pos, through))

    async def tail(self, req: TailRequest) -> ReadReply:
        view = await self.home.require_namespace(req.ns)
        events = await self.home.log.read_last(req.ns, req.n)
        return ReadReply(events=tuple(events), through=events[-1].seq if events else 0, head=view.pos)

    async def block(self, req: BlockRequest) -> BlockReply:
        """A stored block by id, or by a unique prefix of it (prompts show 12 hex digits)."""
        view = await self.home.require_namespace(req.ns)
        b = self.home.store.get(req.ns, req.block_id)
        if b is None and len(req.block_id) < 32:
            full = resolve(req.block_id, view.state.blocks)
            b = self.home.store.get(req.ns, full) if full else None
        if b is None:
            raise UnknownBlock(f"no block {req.block_id!r} in {req.ns} (or the prefix is not unique); "
                               f"`vmem log tail --ns {req.ns}` lists recent block ids")
        return BlockReply(block=b)

    async def traces(self, req: TracesRequest) -> TracesReply:
        """Every packed-prompt trace of a turn, with its log sequence."""
        view = await self.home.require_namespace(req.ns)
        out = []
        async for batch, _covered in checked_batches(self.home.log, req.ns, batch=8192, on_reject=_ignore):
            out += [(s.seq, s.event) for s in batch if type(s.event) is PromptPacked and s.event.turn == req.turn]
        if not out:
            raise UnknownTurn(f"turn {req.turn} of {req.ns} has no trace; turns so far: 1..{view.state.turn}")
        return TracesReply(traces=tuple(out))

    async def prompt(self, req: PromptRequest) -> PromptReply:
        """A turn's prompt (its last attempt's, or `attempt`'s), packed again from the state just before its trace, checked against the trace."""
        traces = (await self.traces(TracesRequest(ns=req.ns, turn=req.turn))).traces
        chosen = [t for t in traces if req.attempt in (-1, t[1].attempt)]
        if not chosen:
            raise UsageError(f"turn {req.turn} of {req.ns} has no packed prompt for attempt {req.attempt}; "
                             f"its attempts are {', '.join(str(t.attempt) for _s, t in traces) or 'none'}")
        seq, trace = chosen[-1]
        state = await state_at(self.home, req.ns, seq - 1)
        packed = pack_state(self.home.store, req.ns, state, turn=trace.turn, attempt=trace.attempt, budget=trace.budget,
                            tokenizer=trace.tokenizer)
        return PromptReply(turn=trace.turn, attempt=trace.attempt, seq=seq, prompt=packed.prompt, tokens=packed.tokens,
                           sha256=packed.sha256, recorded_sha256=trace.prompt_sha256,
                           equal=packed.sha256 == trace.prompt_sha256)

    async def state(self, req: StateRequest) -> StateReply:
        view = await self.home.require_namespace(req.ns)
        async with view.lock:
            s = view.state
            slots = tuple((label, s.slots[label]) for label in s.slot_order)
            return StateReply(
                state_hash=state_hash(s), head=view.pos, turn=s.turn,
                resident=tuple(sorted(s.resident, key=lambda b: (s.resident[b], b))), pinned=tuple(s.pinned),
                slots=slots, counters=tuple(sorted(s.counters.items())),
                rejected=tuple((r.seq, r.reason) for r in view.rejected),
            )

    async def replay(self, req: ReplayRequest) -> ReplayReport:
        """Re-fold the namespace's log (up to `until`) and compare with the live state."""
        await self.home.require_namespace(req.ns)
        return await replay(self.home, req.ns, until=req.until, checks=PagerChecks(self.home.store) if req.verify else None)

    async def namespaces(self, req: NamespacesRequest) -> NamespacesReply:
        """The namespaces of the caller's tenant (the agents vmem keeps for itself left out)."""
        tenant, agent = req.ns.split("/")
        if agent != TENANT_AGENT:
            raise UsageError(f"ask for a tenant's namespaces on {tenant}/{TENANT_AGENT}, not {req.ns}")
        known = await self.home.log.namespaces()
        return NamespacesReply(namespaces=tuple(
            n for n in known if n.split("/")[0] == tenant and not n.split("/")[1] in (GRANTS_AGENT, TENANT_AGENT)
        ))


def _ignore(_rejected: object) -> None:
    """Skipped records are the view's to report (StateReply.rejected), not each read's."""


def _size(stored: StoredEvent) -> int:
    text = getattr(stored.event, "text", "")
    return 200 + len(text) if isinstance(text, str) else 200
