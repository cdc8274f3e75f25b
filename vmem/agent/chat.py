"""One chat turn of an agent: the MemGPT-style step loop, as a client of the actors.

A user message starts the turn.  Each step the pager pages in and packs, the
model replies with text and/or function calls, and the reducer validates
them: memory functions change state through events, the agent's own tools
run here (in the agent's process), `send_message` is the reply.  A call may
ask for another step (`request_heartbeat`), and so does a tool result or an
error the model should see; steps are bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from vmem.agent.functions import tool_specs
from vmem.agent.tools import AgentTool, run_tool
from vmem.assembly.profiles import ModelProfile
from vmem.models.model import Model, ModelReply
from vmem.schemas.messages import PackReply, ReduceReply, ToolResultsReply

MAX_STEPS = 6


class StepClient(Protocol):
    """The requests a chat turn makes (:class:`vmem.client.client.Client` has them)."""

    async def begin_turn(self, ns: str, message: str, *, profile: ModelProfile, model_name: str, when: str = "",
                         query: str | None = None) -> PackReply: ...

    async def pack_step(self, ns: str, turn: int, step: int, *, profile: ModelProfile, query: str = "") -> PackReply: ...

    async def reduce(self, ns: str, turn: int, step: int, reply: ModelReply, *, model_name: str, profile: ModelProfile,
                     agent_tools: Sequence[str] = (), when: str = "", pack_next: bool = False) -> ReduceReply: ...

    async def tool_results(self, ns: str, turn: int, results: Sequence[tuple[str, str]]) -> ToolResultsReply: ...

    async def end_turn(self, ns: str, turn: int, reply: str) -> None: ...


class ChatResult(msgspec.Struct, frozen=True):
    """The outcome of one chat turn."""

    ns: str
    turn: int
    reply: str
    answered: bool
    steps: int
    calls: tuple[str, ...]
    errors: tuple[str, ...]
    faults: int
    prompt_tokens: int
    prompt_sha256: str
    budget: int


class StepOutcome(msgspec.Struct, frozen=True):
    """What one step's model reply came to, after validation.

    `done`: the turn has its reply (or nothing more will happen without one).
    `reply`: the text for the user so far (from send_message or a plain answer).
    """

    done: bool
    reply: str
    outcome: str  # answer | continue | fault | error
    heartbeat: bool
    calls: tuple[str, ...]
    errors: tuple[str, ...]
    fault: bool
    ended: bool  # the reducer recorded the turn's end
    next: PackReply | None = None  # the next step's prompt, when asked for and the turn goes on


async def submit_step(
    client: StepClient,
    ns: str,
    turn: int,
    step: int,
    reply: ModelReply,
    *,
    model_name: str,
    profile: ModelProfile,
    tools: Sequence[AgentTool] = (),
    when: str = "",
    pack_next: bool = False,
) -> StepOutcome:
    """Hand a model reply to the reducer (which resolves a fault it asks for), then run the agent's tools."""
    agent_tools: Mapping[str, AgentTool] = {t.name: t for t in tools}
    red = await client.reduce(ns, turn, step, reply, model_name=model_name, profile=profile,
                              agent_tools=tuple(agent_tools), when=when, pack_next=pack_next)
    errors = tuple(red.errors) + ((red.error,) if red.outcome == "error" and red.error else ())
    if red.agent_calls:
        results = [(c.id, await run_tool(agent_tools, c)) for c in red.agent_calls]
        await client.tool_results(ns, turn, results)
    done = red.outcome == "answer" or (red.outcome == "continue" and not red.heartbeat and not red.agent_calls)
    return StepOutcome(
        done=done, reply=red.answer, outcome=red.outcome, heartbeat=red.heartbeat,
        calls=tuple(c.name for c in reply.tool_calls), errors=errors, fault=red.outcome == "fault",
        ended=red.outcome == "answer", next=red.next,
    )


async def chat_turn(
    client: StepClient,
    ns: str,
    message: str,
    *,
    model: Model,
    profile: ModelProfile,
    tools: Sequence[AgentTool] = (),
    when: str = "",
    max_steps: int = MAX_STEPS,
) -> ChatResult:
    """begin (start and pack), then (call the model, submit, pack) until the turn is done or steps run out."""
    specs = tool_specs([t.spec for t in tools])
    packed: PackReply = await client.begin_turn(ns, message, profile=profile, model_name=model.name, when=when)
    turn = packed.turn
    reply_text = ""
    calls: list[str] = []
    errors: list[str] = []
    faults = 0
    step = 0
    done = ended = False
    got: StepOutcome | None = None
    for step in range(max_steps):
        if step > 0:
            packed = got.next if got is not None and got.next is not None else await client.pack_step(ns, turn, step, profile=profile)
        faults += 1 if packed.fault else 0
        out = await model.complete(packed.prompt, packed.messages, specs)
        got = await submit_step(client, ns, turn, step, out, model_name=model.name, profile=profile, tools=tools, when=when,
                                pack_next=step + 1 < max_steps)
        calls += got.calls
        errors += got.errors
        faults += 1 if got.fault else 0
        reply_text = got.reply or reply_text
        done, ended = got.done, got.ended
        if done:
            break
    answered = bool(reply_text)
    if not ended:
        if not reply_text:
            reply_text = f"(no reply after {step + 1} steps)"
        await client.end_turn(ns, turn, reply_text)
    return ChatResult(
        ns=ns, turn=turn, reply=reply_text, answered=answered, steps=step + 1, calls=tuple(calls), errors=tuple(errors),
        faults=faults, prompt_tokens=packed.prompt_tokens, prompt_sha256=packed.prompt_sha256, budget=profile.budget,
    )
