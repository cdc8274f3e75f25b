"""Messages of the reducer: a model's reply, tool results, and the end of a turn."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from vmem.schemas.messages.bounds import MAX_CALLS, Budget, Count, Msg, Name, Ns, Text, TurnNo
from vmem.schemas.messages.paging import FaultReply, PackReply, ToolCall


class ReduceRequest(Msg, tag="reduce", kw_only=True):
    """A model reply to validate.  `agent_tools` names the agent's own tools.

    With a `budget`, a page fault the reply asks for is resolved before the
    reducer answers (the pages are in when the next attempt is packed); with
    `pack_next` too, a reply that does not end the turn (and leaves no tool of
    the agent's to run) comes back with the next attempt's prompt, so each
    further attempt costs the client one round trip.
    """

    ns: Ns
    turn: TurnNo
    attempt: Annotated[int, Meta(ge=0, le=1000)]
    model: Name
    text: Text
    input_tokens: Count = 0
    output_tokens: Count = 0
    tool_calls: Annotated[tuple[ToolCall, ...], Meta(max_length=MAX_CALLS)] = ()
    agent_tools: Annotated[tuple[Name, ...], Meta(max_length=MAX_CALLS)] = ()
    when: Annotated[str, Meta(max_length=64)] = ""  # wall-clock time for people, never folded
    budget: Budget | None = None
    tokenizer: Name = "cl100k_base"
    profile: Name = "offline"
    pack_next: bool = False


class ReduceReply(Msg, tag="reduce_reply", kw_only=True):
    """What the reply meant.

    outcome: "answer" (a reply for the user), "fault" (page something in and
    ask again), "continue" (tool results to act on: another step), or
    "error" (shown to the model next step).
    """

    outcome: str
    answer: str = ""
    cited: tuple[str, ...] = ()
    fault_id: str = ""
    query: str = ""
    block_ids: tuple[str, ...] = ()
    error: str = ""
    heartbeat: bool = False
    agent_calls: tuple[ToolCall, ...] = ()
    errors: tuple[str, ...] = ()
    fault: FaultReply | None = None  # how the fault was resolved, when the request had a budget
    next: PackReply | None = None  # the next attempt's prompt, when asked for (`pack_next`)


class ToolResultsRequest(Msg, tag="tool_results", kw_only=True):
    """Results of the agent's own tools, for calls the model made (call id, content)."""

    ns: Ns
    turn: TurnNo
    results: Annotated[tuple[tuple[Annotated[str, Meta(max_length=256)], Text], ...], Meta(max_length=MAX_CALLS)]


class ToolResultsReply(Msg, tag="tool_results_reply", kw_only=True):
    accepted: tuple[str, ...]
    rejected: tuple[str, ...] = ()


class EndTurnRequest(Msg, tag="end_turn", kw_only=True):
    """Close a turn the reducer did not close (no answer, or the steps ran out)."""

    ns: Ns
    turn: TurnNo
    answer: Text


class EndTurnReply(Msg, tag="end_turn_reply", kw_only=True):
    seq: int
