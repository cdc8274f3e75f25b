"""A chat agent on `Vmem.chat`, with two tools of its own: a calculator and a profile loader.

The agent's memory is vmem's: every message, tool call and tool result is an
event in the home's log; the working context ("human", "persona" slots) is
edited through memory functions (core_memory_append, ...).  With the offline
model (a deterministic stand-in, not an LLM) the turn goes like this:

* "What is 1234 * 56 + 7?"    -> the model calls `calculator`, then send_message.
* "Please load my profile."   -> the model calls `load_profile`, then
                                  core_memory_append puts its result in the
                                  `human` slot of the working context.
* "What is my city?"          -> answered from the working context, with no
                                  tool call: the slot is in every prompt.

Run (from the repository root):

    .venv/bin/python examples/chat-agent/agent.py                  # scripted session, temp home
    .venv/bin/python examples/chat-agent/agent.py --home /tmp/h    # keep the memory between runs
    echo "What is my name?" | .venv/bin/python examples/chat-agent/agent.py --home /tmp/h --stdin
    .venv/bin/python examples/chat-agent/agent.py --model openai   # OPENAI_API_KEY etc., see vmem.models.config
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from vmem import Model, OfflineModel, Vmem, VmemError

# Not (yet) re-exported by `vmem`: the agent-tool type and its calculator, the
# tool spec shape, and the environment-configured model adapters.
from vmem.agent.tools import AgentTool, calculator_tool
from vmem.models.config import model_from_env
from vmem.models.model import ToolSpec

NS = "demo/chat-agent"
PROFILE = Path(__file__).resolve().with_name("profile.json")
SCRIPT = (
    "Hello! Please load my profile.",
    "What is 1234 * 56 + 7?",
    "What is my city?",
    "What is my name?",
    "Do I like tea?",
    "I went kayaking round the harbour wall this morning.",
    "What is (1234 * 56 + 7) / 3?",
    "What did I say about the harbour?",
)


def profile_tool(path: Path = PROFILE) -> AgentTool:
    """`load_profile`: the user's profile from `path` as a few short lines of text."""

    def handler(args: dict[str, Any]) -> str:
        data = json.loads(path.read_text(encoding="utf-8"))
        likes = data.get("likes", [])
        likes = ", ".join(likes) if isinstance(likes, list) else str(likes)
        return f"Name: {data['name']}\nCity: {data['city']}\nLikes: {likes}"

    spec = ToolSpec(
        "load_profile",
        "Load the user's stored profile (name, city, likes). Takes no arguments.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    )
    return AgentTool(spec, handler)


def make_model(kind: str) -> Model:
    if kind == "offline":
        return OfflineModel()
    return model_from_env(kind)  # UsageError (a VmemError) names the missing variable


async def session(home: Path, lines: list[str] | None, model: Model, budget: int, out=sys.stdout) -> None:
    tools = [calculator_tool(), profile_tool()]
    async with Vmem.open(home, create=True) as vm:
        pending = list(lines) if lines is not None else None
        while True:
            if pending is not None:
                if not pending:
                    break
                line = pending.pop(0)
            else:  # --stdin: read a line at a time, off the event loop (the actors keep running)
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                line = line.rstrip("\n")
            if not line.strip():
                continue
            print(f"you> {line}", file=out)
            r = await vm.chat(NS, line, budget=budget, model=model, tools=tools)
            print(f"agent> {r.reply}", file=out)
            print(f"       [turn {r.turn}: calls {', '.join(r.calls) or '-'}; "
                  f"prompt {r.prompt_tokens}/{r.budget} tokens]", file=out)
            for e in r.errors:
                print(f"       [error shown to the model: {e}]", file=out)
            out.flush()
        slot = (await vm.slots(NS)).get("human")
        if slot is not None:
            print(f"working context 'human' (version {slot.version}): {slot.value!r}", file=out)
        rep = await vm.replay(NS)
        verdict = "equal" if rep.equal and rep.prompts_equal == rep.prompts_checked else "DIFFERENT"
        print(f"replay: {rep.events} events, state hash {rep.state_hash[:16]}, live {rep.live_state_hash[:16]}: "
              f"{verdict}; {rep.prompts_equal}/{rep.prompts_checked} prompts re-packed byte-identical", file=out)
        if verdict != "equal":
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, help="vmem home (created if missing; default: a new temp dir)")
    p.add_argument("--model", choices=("offline", "openai", "anthropic"), default="offline")
    p.add_argument("--budget", type=int, default=2000, help="prompt budget in tokens (default 2000)")
    p.add_argument("--stdin", action="store_true", help="read the user's lines from stdin instead of the script")
    args = p.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="vmem-chat-")) / "home"
    try:
        model = make_model(args.model)
        print(f"== chat agent: home {home}, ns {NS}, model {model.name}, budget {args.budget} ==")
        anyio.run(session, home, None if args.stdin else list(SCRIPT), model, args.budget)
    except VmemError as exc:
        print(f"agent.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
