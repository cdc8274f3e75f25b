"""The client's turn methods: ask (with page faults), chat with tools, and the step-by-step calls a custom loop uses."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from vmem.agent.chat import MAX_STEPS, ChatResult, StepOutcome, chat_turn, submit_step
from vmem.agent.tools import AgentTool
from vmem.assembly.profiles import ModelProfile, get_profile, profile_for_budget
from vmem.client.calls import ActorCalls
from vmem.errors import UsageError
from vmem.models.model import Model, ModelReply
from vmem.models.offline import OfflineModel
from vmem.schemas.messages import (
    EndTurnReply,
    EndTurnRequest,
    PackReply,
    ReduceReply,
    ReduceRequest,
    ToolResultsReply,
    ToolResultsRequest,
    TurnBegin,
    TurnRequest,
)
from vmem.state.namespace import validate_namespace

MAX_FAULTS = 3


class AskResult(msgspec.Struct, frozen=True):
    """The outcome of one turn (the JSON of ``vmem ask --json``)."""

    ns: str
    turn: int
    answer: str
    cited: tuple[str, ...]
    answered: bool
    attempts: int
    faults: int
    evictions: int
    loaded: tuple[str, ...]
    evicted: tuple[str, ...]
    summaries: tuple[str, ...]
    prompt_sha256: str
    prompt_tokens: int
    budget: int


def resolve_profile(budget: int | None, profile: ModelProfile | str | None, model_name: str) -> ModelProfile:
    """The profile a turn runs with: a built-in or given profile, or one of exactly `budget` tokens."""
    if isinstance(profile, str):
        profile = get_profile(profile)
    if profile is None:
        if budget is None:
            raise UsageError("give a token budget or a model profile")
        return profile_for_budget(budget, name=model_name)
    if budget is not None and budget != profile.budget:
        raise UsageError(f"budget {budget} disagrees with profile {profile.name!r} (budget {profile.budget}); give one")
    return profile


class TurnCalls(ActorCalls):
    """Turns: each is a few requests to the pager, packer and reducer; the model runs here, in the caller."""

    async def ask(
        self,
        ns: str,
        question: str,
        *,
        budget: int | None = None,
        profile: ModelProfile | str | None = None,
        model: Model | None = None,
        max_faults: int = MAX_FAULTS,
        prefetch: bool = True,
    ) -> AskResult:
        """Run one turn: pack, call the model, reduce, and resolve page faults (bounded).

        The prompt budget is `budget` tokens, or the `profile`'s window minus
        its reserved output; the profile's tokenizer counts them exactly.
        With `prefetch` (the default) the pager pages in for the question
        before the model sees it; without, paging is on demand: only the
        model's page faults load anything.  A turn answered at once costs two
        requests: the pager's (start, page in, pack) and the reducer's; each
        further attempt one more (the reducer resolves the fault and packs).
        """
        question = question.strip()
        if not question:
            raise UsageError("the question is empty; ask something")
        validate_namespace(ns)
        model = model or OfflineModel()
        prof = resolve_profile(budget, profile, model.name)
        begin = TurnBegin(message=question, model=model.name, mode="ask", key=uuid.uuid4().hex)
        faults = 0
        loaded: list[str] = []
        evicted: list[str] = []
        summaries: list[str] = []
        answer, cited, answered = "", (), False
        packed = await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, budget=prof.budget, profile=prof.name, tokenizer=prof.tokenizer,
            query=question if prefetch else "", begin=begin,
        ), PackReply)
        turn = packed.turn
        attempt = 0
        for attempt in range(max_faults + 1):
            if packed.fault:
                faults += 1
                loaded += packed.loaded
                evicted += packed.evicted
                summaries += packed.summaries
            reply = await model.complete(packed.prompt, packed.messages)
            # Resolves a fault the reply asks for and packs the next attempt: one round trip an attempt.
            red = await self._call(ns, "reducer", "reduce", ReduceRequest(
                ns=ns, turn=turn, attempt=attempt, model=model.name, text=reply.text, input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens, budget=prof.budget, tokenizer=prof.tokenizer, profile=prof.name,
                pack_next=attempt < max_faults,
            ), ReduceReply)
            if red.outcome == "answer":
                answer, cited, answered = red.answer, red.cited, True
                break
            if red.fault is not None:
                faults += 1
                loaded += red.fault.loaded
                evicted += red.fault.evicted
                summaries += red.fault.summaries
            if red.next is None:
                break
            packed = red.next
        if not answered:
            answer = f"No answer: the pages faulted in over {attempt + 1} attempts did not hold it."
            await self.end_turn(ns, turn, answer)
        return AskResult(
            ns=ns, turn=turn, answer=answer, cited=tuple(cited), answered=answered, attempts=attempt + 1,
            faults=faults, evictions=len(evicted), loaded=tuple(loaded), evicted=tuple(evicted),
            summaries=tuple(summaries), prompt_sha256=packed.prompt_sha256, prompt_tokens=packed.prompt_tokens,
            budget=prof.budget,
        )

    async def chat(
        self,
        ns: str,
        message: str,
        *,
        budget: int | None = None,
        profile: ModelProfile | str | None = None,
        model: Model | None = None,
        tools: Sequence[AgentTool] = (),
        when: str = "",
        max_steps: int = MAX_STEPS,
    ) -> ChatResult:
        """One chat turn of an agent with MemGPT-style memory (see :mod:`vmem.agent.chat`).

        `tools` are the agent's own tools; `when` is the message's wall-clock
        time, recorded for people and for date search (never read by fold).
        Works on a new namespace: the first turn creates it.
        """
        validate_namespace(ns)
        if not message.strip():
            raise UsageError("the message is empty; say something")
        model = model or OfflineModel()
        prof = resolve_profile(budget, profile, model.name)
        return await chat_turn(self, ns, message.strip(), model=model, profile=prof, tools=tools, when=when,
                               max_steps=max_steps)

    async def begin_turn(self, ns: str, message: str, *, profile: ModelProfile, model_name: str, when: str = "",
                         query: str | None = None) -> PackReply:
        """Start a chat turn with the user's message and pack its first step (the reply's `turn`)."""
        validate_namespace(ns)
        message = message.strip()
        if not message:
            raise UsageError("the message is empty; say something")
        begin = TurnBegin(message=message, model=model_name, mode="chat", when=when, key=uuid.uuid4().hex)
        return await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, attempt=0, budget=profile.budget, profile=profile.name, tokenizer=profile.tokenizer,
            query=message if query is None else query, begin=begin,
        ), PackReply)

    async def pack_step(self, ns: str, turn: int, step: int, *, profile: ModelProfile, query: str = "") -> PackReply:
        """The packed prompt (string and chat messages) for one step of a turn."""
        return await self._call(ns, "pager", "turn", TurnRequest(
            ns=ns, turn=turn, attempt=step, budget=profile.budget, profile=profile.name, tokenizer=profile.tokenizer,
            query=query if step == 0 else "",
        ), PackReply)

    async def reduce(self, ns: str, turn: int, step: int, reply: ModelReply, *, model_name: str, profile: ModelProfile,
                     agent_tools: Sequence[str] = (), when: str = "", pack_next: bool = False) -> ReduceReply:
        """Hand one model reply to the reducer (a page fault it asks for is resolved before it answers).

        With `pack_next`, a reply that leaves the turn open (and no agent tool
        to run) comes back with the next step's prompt (`ReduceReply.next`).
        """
        return await self._call(ns, "reducer", "reduce", ReduceRequest(
            ns=ns, turn=turn, attempt=step, model=model_name, text=reply.text, tool_calls=reply.tool_calls,
            agent_tools=tuple(agent_tools), input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
            when=when, budget=profile.budget, tokenizer=profile.tokenizer, profile=profile.name, pack_next=pack_next,
        ), ReduceReply)

    async def tool_results(self, ns: str, turn: int, results: Sequence[tuple[str, str]]) -> ToolResultsReply:
        """Record the results of the agent's own tools (call id, content)."""
        return await self._call(ns, "reducer", "tool_results",
                                ToolResultsRequest(ns=ns, turn=turn, results=tuple(results)), ToolResultsReply)

    async def submit_step(
        self, ns: str, turn: int, step: int, reply: ModelReply, *, model_name: str, profile: ModelProfile,
        tools: Sequence[AgentTool] = (), when: str = "",
    ) -> StepOutcome:
        """Validate and apply one model reply; runs the agent's tools and resolves faults."""
        return await submit_step(self, ns, turn, step, reply, model_name=model_name, profile=profile, tools=tools, when=when)

    async def end_turn(self, ns: str, turn: int, reply: str) -> None:
        """Close a turn the reducer did not close (see StepOutcome.ended)."""
        await self._call(ns, "reducer", "end", EndTurnRequest(ns=ns, turn=turn, answer=reply), EndTurnReply)
