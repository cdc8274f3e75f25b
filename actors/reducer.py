"""The reducer actor: turns model output into validated events.

Model output is never ground truth: :mod:`vmem.agent.reduction` checks it against
the prompt that was actually packed for this turn and attempt (from the log,
not from the caller) and against the functions the namespace allows.  This
actor runs the searches a reply asks for (they read indexes), then appends
what the decision returns.  Nothing it rejects changes state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from vmem.actors.runtime import Caller, Route
from vmem.actors.writer import Writer
from vmem.agent.functions import (
    PAGE_SIZE,
    ArchivalMemorySearch,
    Call,
    ConversationSearch,
    ConversationSearchDate,
)
from vmem.agent.memory import format_hits
from vmem.agent.reduction import (
    check_calls,
    end_turn_events,
    reduce_calls_reply,
    reduce_text_reply,
    tool_results_reply,
    valid_text,
)
from vmem.errors import UnknownTurn
from vmem.schemas.messages import (
    MAX_IDS,
    MAX_QUERY,
    EndTurnReply,
    EndTurnRequest,
    FaultReply,
    FaultRequest,
    PackReply,
    ReduceReply,
    ReduceRequest,
    SearchReply,
    SearchRequest,
    ToolResultsReply,
    ToolResultsRequest,
    TurnRequest,
)
from vmem.state.fold import State
from vmem.storage.home import Home
from vmem.storage.view import Draft


class Reducer:
    name = "reducer"
    queue = "reducer"
    concurrency = 1

    def __init__(self, home: Home, writer: Writer, caller: Caller | None = None) -> None:
        self.home = home
        self.writer = writer
        self.call = caller

    def routes(self) -> Mapping[str, Route]:
        return {
            "reduce": Route(self.reduce, ReduceRequest, max_bytes=8 * 2**20),
            "tool_results": Route(self.tool_results, ToolResultsRequest, max_bytes=8 * 2**20),
            "end": Route(self.end, EndTurnRequest),
        }

    async def reduce(self, req: ReduceRequest) -> ReduceReply:
        await self.home.require_namespace(req.ns)
        # Untrusted text may hold unpaired surrogates: replaced rather than fail the turn.
        req = msgspec.structs.replace(
            req, text=valid_text(req.text),
            tool_calls=tuple(msgspec.structs.replace(c, arguments=valid_text(c.arguments)) for c in req.tool_calls),
        )
        key = f"reduce:{req.turn}:{req.attempt}"
        if not req.tool_calls:
            reply, _result = await self.writer.commit(req.ns, lambda d: _decided(d, reduce_text_reply(d.state, req)), key=key)
        else:
            state = self.home.view(req.ns).state
            checked = check_calls(state, req)
            found = await self._searches(state, req, checked)
            reply, _result = await self.writer.commit(
                req.ns, lambda d: _decided(d, reduce_calls_reply(d.state, req, check_calls(d.state, req), found)), key=key
            )
        if reply.outcome == "fault" and req.budget is not None and self.call is not None:
            resolved = await self.call(
                req.ns, "pager", "fault",
                FaultRequest(ns=req.ns, fault_id=reply.fault_id, turn=req.turn, budget=req.budget,
                             query=reply.query[:MAX_QUERY], block_ids=reply.block_ids[:MAX_IDS], tokenizer=req.tokenizer),
                FaultReply,
            )
            reply = msgspec.structs.replace(reply, fault=resolved)
        done = reply.outcome == "answer" or (reply.outcome == "continue" and not reply.heartbeat)
        if req.pack_next and req.budget is not None and not done and not reply.agent_calls and self.call is not None:
            packed = await self.call(req.ns, "pager", "turn", TurnRequest(
                ns=req.ns, turn=req.turn, attempt=req.attempt + 1, budget=req.budget, profile=req.profile,
                tokenizer=req.tokenizer), PackReply)
            reply = msgspec.structs.replace(reply, next=packed)
        return reply

    async def _searches(self, state: State, req: ReduceRequest, checked: Sequence[object]) -> dict[str, str]:
        """The results of the searches the calls ask for, by call id (searches read indexes)."""
        recent = self.home.store.get_many(req.ns, state.messages[-16:])
        # The turn's own messages would always match a search about them.
        this_turn = tuple(b for b, blk in recent.items() if dict(blk.attrs).get("turn") == str(req.turn))
        found: dict[str, str] = {}
        for c in checked:
            if not isinstance(c, Call):
                continue
            a = c.args
            if isinstance(a, ConversationSearch):
                ids, total = await self._search(req.ns, a.query, ("message",), a.page, this_turn)
            elif isinstance(a, ArchivalMemorySearch):
                ids, total = await self._search(req.ns, a.query, ("fact",), a.page, ())
            elif isinstance(a, ConversationSearchDate):
                ids, total = self._by_date(state, req.ns, a)
            else:
                continue
            blocks = self.home.store.get_many(req.ns, ids)
            found[c.call.id] = format_hits([blocks[b] for b in ids if b in blocks], a.page, total)
        return found

    async def _search(self, ns: str, query: str, kinds: tuple[str, ...], page: int, exclude: tuple[str, ...]) -> tuple[list[str], int]:
        if self.call is None or not query.strip():
            return [], 0
        want = (page + 1) * PAGE_SIZE
        reply = await self.call(ns, "retriever", "search",
                                SearchRequest(ns=ns, query=query, limit=min(want + 50, 1000), exclude=exclude, kinds=kinds),
                                SearchReply)
        ids = [c.block_id for c in reply.candidates]
        return ids[page * PAGE_SIZE : want], len(ids)

    def _by_date(self, state: State, ns: str, a: ConversationSearchDate) -> tuple[list[str], int]:
        start, end = a.start_date[:10], a.end_date[:10]
        blocks = self.home.store.get_many(ns, state.messages)
        hits = []
        for bid in state.messages:
            b = blocks.get(bid)
            when = dict(b.attrs).get("when", "")[:10] if b is not None else ""
            if b is not None and b.kind == "message" and when and start <= when <= end:
                hits.append(bid)
        return hits[a.page * PAGE_SIZE : (a.page + 1) * PAGE_SIZE], len(hits)

    async def tool_results(self, req: ToolResultsRequest) -> ToolResultsReply:
        """Record the agent's tool results, for calls that are still waiting for one."""
        await self.home.require_namespace(req.ns)
        reply, _result = await self.writer.commit(req.ns, lambda d: _decided(d, tool_results_reply(d.state, req)))
        return reply

    async def end(self, req: EndTurnRequest) -> EndTurnReply:
        """Close a turn the reducer did not close (no answer, or the steps ran out)."""
        state = (await self.home.require_namespace(req.ns)).state
        if req.turn < 1 or req.turn > state.turn:
            raise UnknownTurn(f"turn {req.turn} of {req.ns} has not started (turns so far: 1..{state.turn})")
        _out, result = await self.writer.commit(
            req.ns, lambda d: d.add(end_turn_events(d.state, req.ns, req.turn, req.answer)), key=f"turn-ended:{req.turn}"
        )
        return EndTurnReply(seq=result.last_seq if result else 0)


def _decided(draft: Draft, decision):  # type: ignore[no-untyped-def]
    events, reply = decision
    draft.add(events)
    return reply
