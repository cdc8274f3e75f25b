"""CLI commands that write and use pages: init, ingest, reindex, ask, chat, show, demo.

Those that index or search say which embedder they use: a line on stderr,
and an ``embedder`` field in their ``--json`` output.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vmem.agent.tools import calculator_tool
from vmem.assembly.ingest import DEFAULT_PAGE_TOKENS
from vmem.assembly.profiles import DEFAULT_BUDGET
from vmem.assembly.text_input import DEFAULT_MAX_BYTES
from vmem.cli.common import (
    Parents,
    default_ns,
    embedder_of,
    make_model,
    out,
    pinned_embedder_id,
    say_embedder,
    with_embedder,
)
from vmem.cli.demo import DEMO_BUDGET, run_demo
from vmem.cli.progress import ProgressBar
from vmem.client.turns import MAX_FAULTS
from vmem.errors import UsageError
from vmem.service.vmem import Vmem
from vmem.storage.home import MARKER, Home, resolve_home


def cmd_init(args: argparse.Namespace) -> int:
    path = resolve_home(args.home)
    existed = (path / MARKER).exists()
    home = Home.init(path)
    home.env.close()  # a new home: nothing but its store is open
    if args.json:
        out({"home": str(path), "created": not existed})
    else:
        print(f"{'opened existing' if existed else 'initialised'} vmem home at {path}")
    return 0


async def cmd_ingest(vm: Vmem, args: argparse.Namespace) -> int:
    path = Path(args.path)
    embedder = await embedder_of(vm, args.ns)
    bar = ProgressBar(f"ingest {path.name}", path.stat().st_size if path.is_file() else 0)
    bar.enabled = bar.enabled and not args.json
    try:
        result = await vm.ingest(args.ns, path, page_tokens=args.page_tokens, max_bytes=args.max_bytes, progress=bar.update)
    finally:
        bar.close()
    if args.json:
        out(with_embedder(result, embedder))
    else:
        note = " (already ingested: nothing new committed)" if result.duplicate else ""
        print(f"ingested {path} into {result.ns}: {result.pages} pages, {result.bytes} bytes, doc {result.doc_id}{note}")
        say_embedder(args, embedder)
    return 0


async def cmd_ask(vm: Vmem, args: argparse.Namespace) -> int:
    if args.model != "offline":
        raise UsageError(f"model {args.model!r} is not available here; use --model offline")
    embedder = await embedder_of(vm, args.ns)
    result = await vm.ask(args.ns, args.question, budget=args.budget, profile=args.profile, max_faults=args.max_faults)
    if args.json:
        out(with_embedder(result, embedder))
        return 0
    print(result.answer)
    if result.cited:
        print("cited: " + ", ".join(result.cited))
    print(
        f"turn {result.turn} · {result.attempts} attempt(s) · {result.faults} fault(s) · "
        f"{result.evictions} eviction(s) · {len(result.summaries)} summary(ies) · "
        f"prompt {result.prompt_tokens}/{result.budget} tokens · sha256 {result.prompt_sha256[:16]}"
    )
    say_embedder(args, embedder)
    return 0


async def cmd_show(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await default_ns(vm, args.ns)
    block = await vm.block(ns, args.block_id)
    if args.json:
        out(block)
    else:
        attrs = " ".join(f"{k}={v}" for k, v in block.attrs)
        print(f"{block.block_id}  {block.kind}/{block.role}  {attrs}".rstrip())
        print(block.text)
    return 0


async def cmd_chat(vm: Vmem, args: argparse.Namespace) -> int:
    embedder = await embedder_of(vm, args.ns)
    say_embedder(args, embedder)
    model = make_model(args.model)
    tools = [calculator_tool()]
    interactive = sys.stdin.isatty() and not args.json
    try:
        while True:
            if interactive:
                try:
                    line = input("you> ")
                except EOFError:
                    print()
                    return 0
            else:
                line = sys.stdin.readline()
                if not line:
                    return 0
            line = line.strip()
            if not line:
                continue
            when = args.when or datetime.now(timezone.utc).isoformat(timespec="seconds")
            budget = args.budget if args.budget or args.profile else DEFAULT_BUDGET
            r = await vm.chat(args.ns, line, budget=budget, profile=args.profile, model=model, tools=tools, when=when)
            if args.json:
                out(with_embedder(r, embedder))
            else:
                print(f"{'vmem> ' if interactive else ''}{r.reply}", flush=True)
    finally:
        await model.aclose()


async def cmd_reindex(vm: Vmem, args: argparse.Namespace) -> int:
    # With --nats the service's retriever embeds; an explicit --embedder is what it must be using.
    pin = pinned_embedder_id(args.embedder) if args.nats else ""
    bar = ProgressBar(f"reindex {args.ns}", 0, unit="events")
    bar.enabled = bar.enabled and not args.json

    def progress(through: int, last: int) -> None:
        bar.total = max(last, 1)
        bar.update(through)

    try:
        r = await vm.reindex(args.ns, embedder=pin, progress=progress)
    finally:
        bar.close()
    if args.json:
        out({"ns": args.ns, "embedder": r.embedder, "previous": r.previous, "vectors": r.vectors,
             "through_seq": r.through_seq})
    else:
        was = f" (was {r.previous})" if r.previous and r.previous != r.embedder else ""
        print(f"re-indexed {args.ns} with {r.embedder}{was}: {r.vectors} vectors through log sequence {r.through_seq}")
    return 0


async def cmd_demo(vm: Vmem, args: argparse.Namespace) -> int:
    return await run_demo(vm, home=resolve_home(args.home), budget=args.budget, json_out=args.json)


def add_turn_commands(sub: Any, parents: Parents) -> None:
    """Register init, ingest, ask, show, chat and demo."""
    common, ns_opt, ns_req = parents.common, parents.ns_opt, parents.ns_req
    s = sub.add_parser("init", parents=[common], help="create a vmem home", description="Create a vmem home directory.")
    s.set_defaults(run=cmd_init, sync=True)

    s = sub.add_parser("ingest", parents=[common, ns_req], help="split a text file into pages",
                       description="Split a UTF-8 text file into pages and append them to a namespace's log.")
    s.add_argument("path", help="UTF-8 text or markdown file")
    s.add_argument("--page-tokens", type=int, default=DEFAULT_PAGE_TOKENS,
                   help=f"maximum tokens per page (default {DEFAULT_PAGE_TOKENS})")
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help=f"refuse larger files (default {DEFAULT_MAX_BYTES})")
    s.set_defaults(run=cmd_ingest)

    s = sub.add_parser("reindex", parents=[common, ns_req], help="rebuild a namespace's vectors with an embedder",
                       description="Rebuild a namespace's vector index with the embedder in use (--embedder, else "
                                   "$VMEM_EMBEDDER, else auto) and record it as the namespace's, so later commands use "
                                   "it without mixing vectors of two embedders. The BM25 index is brought up to date. "
                                   "With --nats the service's embedder is used (an explicit --embedder must match it).")
    s.set_defaults(run=cmd_reindex)

    s = sub.add_parser("ask", parents=[common, ns_req], help="run one turn",
                       description="Ask a question: pack a prompt within the budget, call the model, resolve page faults.")
    s.add_argument("question")
    s.add_argument("--budget", type=int, help="prompt budget in tokens (window minus reserved output)")
    s.add_argument("--profile", help="a built-in model profile (its window minus reserved output is the budget)")
    s.add_argument("--model", default="offline", help="model: offline (a deterministic stand-in, not an LLM)")
    s.add_argument("--max-faults", type=int, default=MAX_FAULTS, help=f"page faults allowed per turn (default {MAX_FAULTS})")
    s.set_defaults(run=cmd_ask)

    s = sub.add_parser("show", parents=[common, ns_opt], help="print a stored block", description="Print a stored block by id.")
    s.add_argument("block_id")
    s.set_defaults(run=cmd_show)

    s = sub.add_parser("chat", parents=[common, ns_req], help="talk to an agent with memory",
                       description="Chat with an agent whose memory is vmem: interactive on a terminal, otherwise one "
                                   "reply per input line. State persists in the home.")
    s.add_argument("--model", default="offline", choices=("offline", "openai", "anthropic"),
                   help="offline (a deterministic stand-in, not an LLM), or an API configured by environment: "
                        "OPENAI_BASE_URL/OPENAI_API_KEY/VMEM_OPENAI_MODEL or ANTHROPIC_API_KEY/VMEM_ANTHROPIC_MODEL")
    s.add_argument("--budget", type=int, help=f"prompt budget in tokens (default: the profile's, or {DEFAULT_BUDGET})")
    s.add_argument("--profile", help="a built-in model profile")
    s.add_argument("--when", help="timestamp recorded on messages (default: now, UTC)")
    s.set_defaults(run=cmd_chat)

    s = sub.add_parser("demo", parents=[common], help="the main job, offline",
                       description="Ingest a document at least 20x the budget, ask questions that fault pages in, evict "
                                   "and summarise, then replay.")
    s.add_argument("--budget", type=int, default=DEMO_BUDGET, help=f"prompt budget in tokens (default {DEMO_BUDGET})")
    s.set_defaults(run=cmd_demo, demo=True)
