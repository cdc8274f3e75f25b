"""The reducer's decisions: a model reply and the state in, validated events and a verdict out.

Model output is never ground truth.  It is checked against the prompt that
was actually packed for this turn and attempt (the state's last trace, not
what the caller says) and against the functions the namespace allows.  Text
becomes an answer, a page-fault request or an error; tool calls are
validated one by one: memory functions become events, the agent's own tools
are handed back to run, and anything malformed becomes an error result the
model sees next step.  Nothing rejected changes state.  Searches read
indexes, so the reducer actor runs them first and passes their results in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vmem.agent.functions import (
    ArchivalMemorySearch,
    Call,
    CallError,
    ConversationSearch,
    ConversationSearchDate,
    PageFault,
    SendMessage,
    validate_call,
)
from vmem.agent.memory import apply_memory_call, tool_call_block, tool_result
from vmem.agent.replies import reduce_text
from vmem.schemas.events import (
    ErrorRaised,
    Event,
    ModelResponded,
    PageFaultRaised,
    TurnEnded,
)
from vmem.schemas.messages import (
    ReduceReply,
    ReduceRequest,
    ToolCall,
    ToolResultsReply,
    ToolResultsRequest,
)
from vmem.state.blocks import make_block
from vmem.state.fold import State

Checked = Call | CallError | ToolCall
SEARCHES = (ConversationSearch, ArchivalMemorySearch, ConversationSearchDate)


def valid_text(text: str) -> str:
    """`text` with unpaired surrogates replaced: JSON lets "\\ud800" through, but it cannot be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _responded(req: ReduceRequest) -> ModelResponded:
    return ModelResponded(ns=req.ns, turn=req.turn, attempt=req.attempt, model=req.model, text=req.text,
                          input_tokens=req.input_tokens, output_tokens=req.output_tokens)


def _stale(state: State, req: ReduceRequest) -> str:
    if tuple(state.prompt_key) != (req.turn, req.attempt):
        return f"turn {req.turn} attempt {req.attempt} is not the last packed prompt {tuple(state.prompt_key)}"
    return ""


def _attrs(req: ReduceRequest) -> dict[str, str]:
    return {"turn": str(req.turn)} | ({"when": req.when} if req.when else {})


def fault_id(turn: int, attempt: int) -> str:
    return f"t{turn}a{attempt}"


def reduce_text_reply(state: State, req: ReduceRequest) -> tuple[list[Event], ReduceReply]:
    """A text reply: an answer (with citations of what the prompt showed), a fault, or an error."""
    responded = _responded(req)
    stale = _stale(state, req)
    if stale:
        return ([responded, ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code="stale_prompt", message=stale)],
                ReduceReply(outcome="error", error=stale))
    out = reduce_text(req.text, set(state.prompt_blocks), state.blocks.keys())
    if out.kind == "answer":
        answer = make_block(req.ns, "message", "assistant", out.answer, _attrs(req))
        return ([responded, answer, TurnEnded(ns=req.ns, turn=req.turn, answer=out.answer, cited=out.cited,
                                              block_id=answer.block_id)],
                ReduceReply(outcome="answer", answer=out.answer, cited=out.cited))
    if out.kind == "fault":
        fid = fault_id(req.turn, req.attempt)
        raised = PageFaultRaised(ns=req.ns, fault_id=fid, turn=req.turn, query=out.query, block_ids=out.block_ids,
                                 source="pager" if out.implicit else "model")
        return [responded, raised], ReduceReply(outcome="fault", fault_id=fid, query=out.query, block_ids=out.block_ids)
    return ([responded, ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code=out.code, message=out.error)],
            ReduceReply(outcome="error", error=out.error, cited=out.cited))


def check_calls(state: State, req: ReduceRequest) -> list[Checked]:
    """Each tool call validated against the schemas and the namespace's permissions."""
    agent_tools = {name: None for name in req.agent_tools}
    return [validate_call(c, allowed=state.allowed_functions, agent_tools=agent_tools) for c in req.tool_calls]  # type: ignore[arg-type]


def reduce_calls_reply(
    state: State, req: ReduceRequest, checked: Sequence[Checked], found: Mapping[str, str]
) -> tuple[list[Event], ReduceReply]:
    """Tool calls: memory edits applied, searches answered from `found` (call id -> result text)."""
    events: list[Event] = [_responded(req)]
    stale = _stale(state, req)
    if stale:
        return (events + [ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code="stale_prompt", message=stale)],
                ReduceReply(outcome="error", error=stale))
    attrs = _attrs(req)
    if req.text.strip():
        events.append(make_block(req.ns, "message", "assistant", req.text.strip(), attrs))
    answer = ""
    heartbeat = False
    fault: PageFault | None = None
    agent_calls: list[ToolCall] = []
    errors: list[str] = []
    for c in checked:
        raw = c.call if isinstance(c, (Call, CallError)) else c
        call_block = tool_call_block(req.ns, raw.id, raw.name, raw.arguments, req.turn)
        events.append(call_block)
        if isinstance(c, CallError):
            errors.append(c.message)
            heartbeat = True  # let the model see the error and try again
            events += tool_result(req.ns, raw.id, call_block.block_id, f"error: {c.message}", req.turn)
            events.append(ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code=c.code, message=c.message, call_id=raw.id))
            continue
        if isinstance(c, ToolCall):
            agent_calls.append(c)  # the agent runs it and reports the result
            heartbeat = True
            continue
        a = c.args
        heartbeat = heartbeat or a.request_heartbeat
        if isinstance(a, SendMessage):
            answer = a.message
            events.append(make_block(req.ns, "message", "assistant", a.message, attrs))
            result = "sent"
        elif isinstance(a, PageFault):
            fault = a
            result = "paging in; you will see the pages next step"
        elif c.call.id in found:
            result = found[c.call.id]
        else:
            applied = apply_memory_call(state, req.ns, c, turn=req.turn)
            result = applied.result
            if applied.error:
                errors.append(applied.error)
                heartbeat = True
                events.append(ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code="refused", message=applied.error, call_id=raw.id))
            events += applied.events
        events += tool_result(req.ns, raw.id, call_block.block_id, result, req.turn)
    if fault is not None:
        fid = fault_id(req.turn, req.attempt)
        events.append(PageFaultRaised(ns=req.ns, fault_id=fid, turn=req.turn, query=fault.query,
                                      block_ids=tuple(fault.block_ids), source="model"))
        return events, ReduceReply(outcome="fault", fault_id=fid, query=fault.query, block_ids=tuple(fault.block_ids),
                                   heartbeat=True, agent_calls=tuple(agent_calls), errors=tuple(errors))
    if answer and not heartbeat:
        events.append(TurnEnded(ns=req.ns, turn=req.turn, answer=answer))
        return events, ReduceReply(outcome="answer", answer=answer, errors=tuple(errors))
    return events, ReduceReply(outcome="continue", answer=answer, heartbeat=heartbeat, agent_calls=tuple(agent_calls),
                               errors=tuple(errors), error="; ".join(errors))


def tool_results_reply(state: State, req: ToolResultsRequest) -> tuple[list[Event], ToolResultsReply]:
    """The agent's tool results, for calls still waiting for one; others are refused."""
    events: list[Event] = []
    accepted, rejected = [], []
    for call_id, content in req.results:
        block = state.pending_calls.get(call_id)
        if block is None:
            rejected.append(call_id)
            continue
        accepted.append(call_id)
        events += tool_result(req.ns, call_id, block, valid_text(content), req.turn)
    if rejected:
        events.append(ErrorRaised(ns=req.ns, turn=req.turn, where="reducer", code="unknown_call",
                                  message=f"no pending tool call {', '.join(rejected)}"))
    return events, ToolResultsReply(accepted=tuple(accepted), rejected=tuple(rejected))


def end_turn_events(state: State, ns: str, turn: int, answer: str) -> list[Event]:
    """Close a turn nothing else closed (once: a turn that has ended stays ended)."""
    if turn < 1 or turn > state.turn:
        return []
    return [TurnEnded(ns=ns, turn=turn, answer=valid_text(answer))]
