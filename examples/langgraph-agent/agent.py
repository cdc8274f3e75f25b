"""vmem as the memory of a LangGraph agent: recall -> respond -> remember, looped per step.

The graph is the MemGPT step loop drawn as a LangGraph ``StateGraph``:

    START -> recall -> respond -> remember --(another step?)--> recall
                                          \\--(answered)------> END

* ``recall``   asks vmem for the packed context of this step: the first step
               of a turn records the user message (the turn's start) and
               pages in for it; vmem's pager picks what is resident inside the
               token budget (working context, recent messages, tool results,
               retrieved pages) and packs it.
* ``respond``  calls the model on that context with vmem's memory functions as
               tools (send_message, core_memory_append, conversation_search,
               ...).  The default model is vmem's offline model: a
               deterministic stand-in, not an LLM; no network, no API key.
* ``remember`` hands the model's reply to vmem's reducer, which validates it
               and writes it back as events: working-context edits, search
               results, the reply itself.  If a call asked for another step
               (a heartbeat), the graph goes back to ``recall``.

Everything durable lives in the vmem home (``--home``), so a second process on
the same home remembers what the first was told:

    python examples/langgraph-agent/agent.py --home /tmp/lg "My name is Ada"
    python examples/langgraph-agent/agent.py --home /tmp/lg "What is my name?"

With no message arguments a short scripted session runs.

The graph owns the step loop, so it uses vmem's per-step API:
``Vmem.begin_turn`` (records the user message, pages in for it and packs the
first step), ``Vmem.pack_step`` (packs a later step), ``Vmem.submit_step`` (validates the model's reply,
applies memory functions, resolves page faults) and ``Vmem.end_turn``.
``Vmem.chat`` is the same loop without a graph.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

import anyio
from langgraph.graph import END, START, StateGraph

from vmem import (
    Model,
    ModelReply,
    OfflineModel,
    Vmem,
    VmemError,
    model_from_env,
    profile_for_budget,
    validate_namespace,
)
from vmem.agent.functions import (
    tool_specs,  # the memory functions' JSON schemas, for the model
)

NS = "demo/langgraph"
MAX_STEPS = 6
SCRIPT = (
    "My name is Ada.",
    "I live in Edinburgh.",
    "The lighthouse keeper's cat is called Pepper.",
    "What is my name?",
    "Where do I live?",
    "What did I say about the cat?",
)


class VmemMemory:
    """One agent's memory in a vmem namespace: begin a turn, pack a step, write a reply back."""

    def __init__(self, vm: Vmem, ns: str, *, budget: int, model_name: str) -> None:
        self.vm, self.ns = vm, validate_namespace(ns)
        self.model_name = model_name
        self.profile = profile_for_budget(budget, name=model_name)

    async def begin(self, message: str):
        """Record the user message as the start of a new turn, page in for it and pack step 0 (its `turn`)."""
        return await self.vm.begin_turn(self.ns, message, profile=self.profile, model_name=self.model_name)

    async def recall(self, turn: int, step: int):
        """The packed context for a later step of the turn."""
        return await self.vm.pack_step(self.ns, turn, step, profile=self.profile)

    async def remember(self, turn: int, step: int, reply: ModelReply):
        """Validate the model's reply and write it back (memory edits, searches, the answer)."""
        return await self.vm.submit_step(self.ns, turn, step, reply, model_name=self.model_name, profile=self.profile)

    async def end_unanswered(self, turn: int, text: str) -> None:
        await self.vm.end_turn(self.ns, turn, text)

    async def working_context(self) -> dict[str, str]:
        return {label: slot.value for label, slot in (await self.vm.slots(self.ns)).items()}


class AgentState(TypedDict, total=False):
    message: str                               # the user's message
    turn: int                                  # vmem's turn number
    step: int                                  # step within the turn
    context: Any                               # what recall packed for this step (a PackReply)
    reply: ModelReply                          # what the model said on it
    answer: str                                # the reply for the user so far
    done: bool


def build_graph(memory: VmemMemory, model: Model, log=print):
    """The compiled StateGraph; `log` gets one line per node run."""
    specs = tool_specs()

    async def recall(state: AgentState) -> dict[str, Any]:
        step = state.get("step", -1) + 1
        ctx = await memory.begin(state["message"]) if step == 0 else await memory.recall(state["turn"], step)
        turn = ctx.turn
        log(f"  recall   turn {turn} step {step}: packed {ctx.prompt_tokens}/{memory.profile.budget} tokens, "
            f"{len(ctx.messages)} messages, sha256 {ctx.prompt_sha256[:12]}")
        return {"turn": turn, "step": step, "context": ctx}

    async def respond(state: AgentState) -> dict[str, Any]:
        ctx = state["context"]
        reply = await model.complete(ctx.prompt, ctx.messages, specs)
        shown = ", ".join(f"{c.name}({c.arguments})" for c in reply.tool_calls) or repr(reply.text[:80])
        log(f"  respond  {shown}")
        return {"reply": reply}

    async def remember(state: AgentState) -> dict[str, Any]:
        got = await memory.remember(state["turn"], state["step"], state["reply"])
        answer = got.reply or state.get("answer", "")
        done = got.done
        if not done and state["step"] + 1 >= MAX_STEPS:
            answer = answer or f"(no reply after {MAX_STEPS} steps)"
            done = True
        if done and not got.ended:
            await memory.end_unanswered(state["turn"], answer)
        why = "" if done else " -> another step"
        log(f"  remember {got.outcome}{': ' + '; '.join(got.errors) if got.errors else ''}{why}")
        return {"answer": answer, "done": done}

    g = StateGraph(AgentState)
    g.add_node("recall", recall)
    g.add_node("respond", respond)
    g.add_node("remember", remember)
    g.add_edge(START, "recall")
    g.add_edge("recall", "respond")
    g.add_edge("respond", "remember")
    g.add_conditional_edges("remember", lambda s: END if s["done"] else "recall", ["recall", END])
    return g.compile()


async def run(home: Path, messages: list[str], model: Model, budget: int) -> bool:
    async with Vmem.open(home, create=True) as vm:
        memory = VmemMemory(vm, NS, budget=budget, model_name=model.name)
        graph = build_graph(memory, model)
        for message in messages:
            print(f"you> {message}")
            final = await graph.ainvoke({"message": message}, {"recursion_limit": 4 * MAX_STEPS + 4})
            print(f"agent> {final['answer']}")
        print(f"working context: {await memory.working_context()}")
        rep = await vm.replay(NS)
        ok = rep.equal  # hashes, every traced prompt and every pager decision
        print(f"replay: {rep.events} events, state hash {rep.state_hash[:16]}, live {rep.live_state_hash[:16]}: "
              f"{'equal' if ok else 'DIFFERENT'}; {rep.prompts_equal}/{rep.prompts_checked} prompts re-packed byte-identical")
        return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="vmem as the memory of a LangGraph agent (offline by default).")
    p.add_argument("message", nargs="*", help="messages to send, one turn each (default: a scripted session)")
    p.add_argument("--home", type=Path, help="vmem home, kept across runs (default: a new temp dir)")
    p.add_argument("--model", choices=("offline", "openai", "anthropic"), default="offline")
    p.add_argument("--budget", type=int, default=1500, help="prompt budget in tokens (default 1500)")
    args = p.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="vmem-langgraph-")) / "home"
    try:
        model = OfflineModel() if args.model == "offline" else model_from_env(args.model)
        print(f"== LangGraph agent with vmem memory: home {home}, ns {NS}, model {model.name} ==")
        ok = anyio.run(run, home, args.message or list(SCRIPT), model, args.budget)
    except VmemError as exc:
        print(f"agent.py: error: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
