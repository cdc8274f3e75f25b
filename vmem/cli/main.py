"""The `vmem` command line: a thin shell over the async API (vmem.client.client).

Every client command works embedded (``--home``, else ``$VMEM_HOME``, else
``./.vmem``: the actors run in this process) or against a deployment
(``--nats URL`` with the tenant's ``--user`` and ``$VMEM_NATS_PASSWORD`` or
``--creds``: the actors are ``vmem serve``'s).  Most commands take ``--json``
for stable machine-readable output.  Errors print one line naming what was
wrong and what to do, and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import msgspec

from vmem.agent.tools import calculator_tool
from vmem.assembly.ingest import DEFAULT_PAGE_TOKENS
from vmem.assembly.text_input import DEFAULT_MAX_BYTES
from vmem.bus.subjects import DEFAULT_PREFIX
from vmem.cli.distributed import add_distributed_commands
from vmem.cli.ops import add_ops_commands
from vmem.cli.progress import ProgressBar
from vmem.client.schema import ROUTES
from vmem.errors import UsageError, VmemError, lone_error
from vmem.models.config import model_from_env
from vmem.models.offline import OfflineModel
from vmem.paging.handoff import GRANTS_AGENT, parse_snapshot
from vmem.schemas.events import EVENT_BY_TAG
from vmem.schemas.messages import MAX_READ
from vmem.service.vmem import Vmem
from vmem.storage.home import MARKER, Home, resolve_home

DEFAULT_CHAT_BUDGET = 2048
DEFAULT_FAULT_BUDGET = 2048
PASSWORD_ENV = "VMEM_NATS_PASSWORD"


def _out(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")
    sys.stdout.flush()


async def _default_ns(vm: Vmem, ns: str | None) -> str:
    if ns:
        return ns
    known = [n for n in await _namespaces(vm) if not n.split("/")[1].startswith("_")]
    if len(known) == 1:
        return known[0]
    raise UsageError(
        "--ns is required: " + (f"this home has {len(known)} namespaces ({', '.join(known)})" if known else "this home is empty")
    )


async def _namespaces(vm: Vmem) -> list[str]:
    if vm._home is None:
        raise UsageError("--ns is required with --nats")
    return await vm._home.log.namespaces()


# -- commands ----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = resolve_home(args.home)
    existed = (path / MARKER).exists()
    home = Home.init(path)
    home.env.close()  # a new home: nothing but its store is open
    if args.json:
        _out({"home": str(path), "created": not existed})
    else:
        print(f"{'opened existing' if existed else 'initialised'} vmem home at {path}")
    return 0


async def cmd_ingest(vm: Vmem, args: argparse.Namespace) -> int:
    path = Path(args.path)
    bar = ProgressBar(f"ingest {path.name}", path.stat().st_size if path.is_file() else 0)
    bar.enabled = bar.enabled and not args.json
    try:
        result = await vm.ingest(args.ns, path, page_tokens=args.page_tokens, max_bytes=args.max_bytes, progress=bar.update)
    finally:
        bar.close()
    if args.json:
        _out(result)
    else:
        note = " (already ingested: nothing new committed)" if result.duplicate else ""
        print(f"ingested {path} into {result.ns}: {result.pages} pages, {result.bytes} bytes, doc {result.doc_id}{note}")
    return 0


async def cmd_ask(vm: Vmem, args: argparse.Namespace) -> int:
    if args.model != "offline":
        raise UsageError(f"model {args.model!r} is not available here; use --model offline")
    result = await vm.ask(args.ns, args.question, budget=args.budget, profile=args.profile, max_faults=args.max_faults)
    if args.json:
        _out(result)
        return 0
    print(result.answer)
    if result.cited:
        print("cited: " + ", ".join(result.cited))
    print(
        f"turn {result.turn} · {result.attempts} attempt(s) · {result.faults} fault(s) · "
        f"{result.evictions} eviction(s) · {len(result.summaries)} summary(ies) · "
        f"prompt {result.prompt_tokens}/{result.budget} tokens · sha256 {result.prompt_sha256[:16]}"
    )
    return 0


async def cmd_show(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await _default_ns(vm, args.ns)
    block = await vm.block(ns, args.block_id)
    if args.json:
        _out(block)
    else:
        attrs = " ".join(f"{k}={v}" for k, v in block.attrs)
        print(f"{block.block_id}  {block.kind}/{block.role}  {attrs}".rstrip())
        print(block.text)
    return 0


async def cmd_trace_show(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await _default_ns(vm, args.ns)
    traces = await vm.traces(ns, args.turn)
    if args.json:
        _out([{"seq": seq, "trace": t} for seq, t in traces])
        return 0
    for seq, t in traces:
        print(f"turn {t.turn} attempt {t.attempt + 1} (seq {seq}): {t.prompt_tokens}/{t.budget} tokens, sha256 {t.prompt_sha256}")
        for s in t.sections:
            if s.blocks:
                print(f"  {s.name:<10} {s.tokens:>5} tok  {' '.join(b[:12] for b in s.blocks)}")
        for lo in t.left_out:
            print(f"  left out   {lo.block_id[:12]} from {lo.section}: {lo.reason}")
    return 0


async def cmd_trace_diff(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await _default_ns(vm, args.ns)
    d = await vm.trace_diff(ns, args.turn_a, args.turn_b)
    if args.json:
        _out(d)
        return 0
    print(f"turn {d.a.turn} (sha256 {d.a.prompt_sha256[:12]}, {d.a.prompt_tokens} tok) -> "
          f"turn {d.b.turn} (sha256 {d.b.prompt_sha256[:12]}, {d.b.prompt_tokens} tok)")
    for e in d.entered:
        score = f"  fused {e.fused:.3f}" if e.fused is not None else ""
        print(f"  + {e.block_id[:12]}  {e.section}{score}")
    for e in d.left:
        print(f"  - {e.block_id[:12]}  {e.section}: {e.reason}")
    for e in d.moved:
        print(f"  ~ {e.block_id[:12]}  {e.section} ({e.reason})")
    for name, (ta, tb) in d.sections.items():
        if ta or tb:
            print(f"  {name:<10} {ta:>5} -> {tb:>5} tok")
    return 0


def _print_event(stored: Any, json_out: bool) -> None:
    if json_out:
        _out({"seq": stored.seq, "event": stored.event})
        return
    ev = stored.event
    fields = msgspec.structs.asdict(ev)
    fields.pop("ns", None)
    brief = " ".join(f"{k}={_brief(v)}" for k, v in fields.items())
    print(f"{stored.seq:>8}  {type(ev).__struct_config__.tag:<20} {brief}", flush=True)


async def cmd_log_tail(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await _default_ns(vm, args.ns)
    kinds = _kinds(args.kind)
    last = 0
    for stored in await vm.tail(ns, args.n):
        last = stored.seq
        if not kinds or type(stored.event).__struct_config__.tag in kinds:
            _print_event(stored, args.json)
    if args.follow:
        async with aclosing(vm.watch(ns, kinds=kinds, after=last)) as events:
            async for stored in events:
                _print_event(stored, args.json)
    return 0


def _kinds(given: list[str] | None) -> tuple[str, ...]:
    kinds = tuple(given or ())
    unknown = sorted(set(kinds) - set(EVENT_BY_TAG))
    if unknown:
        raise UsageError(f"unknown event types {unknown}; known: {', '.join(sorted(EVENT_BY_TAG))}")
    return kinds


def _brief(v: Any) -> str:
    s = str(v) if not isinstance(v, (tuple, list)) else f"[{len(v)}]"
    return s if len(s) <= 40 else s[:37] + "..."


async def cmd_replay(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await _default_ns(vm, args.ns)
    report = await vm.replay(ns, until=args.until, verify=args.verify)
    if args.json:
        _out(report)
    else:
        verdict = "equal" if report.equal else "NOT EQUAL"
        print(f"replayed {report.events} events of {ns} (through seq {report.until}): {verdict}")
        print(f"  state hash       {report.state_hash}")
        print(f"  live state hash  {report.live_state_hash}")
        if args.verify:
            print(f"  prompts re-packed {report.prompts_equal}/{report.prompts_checked} to the same sha256")
    if report.rejected:
        print(f"vmem: error: the log of {ns} holds {report.rejected} record(s) that were skipped, not folded: the first, at "
              f"sequence {report.first_rejected}: {report.rejected_reason}; restore the home from a backup if that "
              f"record matters", file=sys.stderr)
        return 1
    return 0 if report.equal else 1


def _embedder(name: str):  # type: ignore[no-untyped-def]
    if name == "minilm":
        from vmem.retrieval.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    return None  # the default: feature hashing


def _model(name: str):  # type: ignore[no-untyped-def]
    if name == "offline":
        return OfflineModel()
    return model_from_env(name)


async def cmd_chat(vm: Vmem, args: argparse.Namespace) -> int:
    model = _model(args.model)
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
            budget = args.budget if args.budget or args.profile else DEFAULT_CHAT_BUDGET
            r = await vm.chat(args.ns, line, budget=budget, profile=args.profile, model=model, tools=tools, when=when)
            if args.json:
                _out(r)
            else:
                print(f"{'vmem> ' if interactive else ''}{r.reply}", flush=True)
    finally:
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()


async def cmd_handoff_export(vm: Vmem, args: argparse.Namespace) -> int:
    _out(await vm.handoff_export(args.ns))
    return 0


async def cmd_handoff_import(vm: Vmem, args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.snapshot == "-" else _read_file(Path(args.snapshot))
    snap = parse_snapshot(data)
    n = await vm.handoff_import(snap, args.ns)
    if args.json:
        _out({"ns": args.ns, "source_ns": snap.source_ns, "snapshot_id": snap.snapshot_id, "pointers": n})
    else:
        print(f"imported {n} pointers from {snap.source_ns} into {args.ns} (snapshot {snap.snapshot_id}); "
              f"they page in on {args.ns}'s next turn")
    return 0


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


async def cmd_grant(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.grant(args.tenant, args.to, agents=args.agents)
    if args.json:
        _out({"tenant": args.tenant, "to": args.to, "agents": args.agents, "granted": True})
    else:
        print(f"{args.tenant} now lets {args.to} import hand-offs from agents {args.agents}")
    return 0


async def cmd_revoke(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.revoke(args.tenant, args.to)
    if args.json:
        _out({"tenant": args.tenant, "to": args.to, "granted": False})
    else:
        print(f"{args.tenant} no longer lets {args.to} import hand-offs")
    return 0


async def cmd_slot_set(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.define_slot(args.ns, args.label, limit=args.limit, value=args.value, readonly=args.readonly)
    if args.json:
        _out({"ns": args.ns, "label": args.label, "limit": args.limit, "readonly": args.readonly})
    else:
        print(f"slot {args.label} of {args.ns}: {len(args.value)}/{args.limit} characters{' (read-only)' if args.readonly else ''}")
    return 0


async def cmd_fault(vm: Vmem, args: argparse.Namespace) -> int:
    r = await vm.fault(args.ns, query=args.query or "", block_ids=args.block or (), budget=args.budget)
    if args.json:
        _out(r)
    else:
        print(f"loaded {len(r.loaded)}: {' '.join(b[:12] for b in r.loaded) or '-'}; evicted {len(r.evicted)}: "
              f"{' '.join(b[:12] for b in r.evicted) or '-'}" + (f"; {r.error}" if r.error else ""))
    return 0 if not r.error else 1


async def cmd_evict(vm: Vmem, args: argparse.Namespace) -> int:
    r = await vm.evict(args.ns, args.block)
    if args.json:
        _out(r)
    else:
        print(f"evicted {len(r.evicted)}" + (f"; refused (pinned) {' '.join(b[:12] for b in r.refused)}" if r.refused else ""))
    return 0 if not r.refused else 1


async def cmd_pin(vm: Vmem, args: argparse.Namespace) -> int:
    r = await (vm.pin if args.pin else vm.unpin)(args.ns, args.block)
    if args.json:
        _out(r)
    else:
        what = "pinned" if args.pin else "unpinned"
        print(f"{what} {len(r.changed)}" + (f"; unknown {' '.join(r.unknown)}" if r.unknown else ""))
    return 0 if not r.unknown else 1


def cmd_schema(args: argparse.Namespace) -> int:
    from vmem.client.schema import json_schema

    _out(json_schema(args.kind))
    return 0


async def cmd_demo(vm: Vmem, args: argparse.Namespace) -> int:
    from vmem.cli.demo import run_demo

    return await run_demo(vm, home=resolve_home(args.home), budget=args.budget, json_out=args.json)


# -- parser ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    base = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a --home given before the command is not reset by the subparser.
    base.add_argument("--home", default=argparse.SUPPRESS, help="vmem home directory (default: $VMEM_HOME, else ./.vmem)")
    base.add_argument("--json", action="store_true", help="print machine-readable JSON")
    base.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="async backend")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing",
                        help="embedder for vector retrieval: feature hashing (default) or all-MiniLM-L6-v2 from local files")
    common.add_argument("--nats", metavar="URL",
                        help="talk to a deployment's `vmem serve` over NATS instead of a local home (nats://host:4222)")
    common.add_argument("--user", help=f"with --nats: the tenant's NATS user (its password in ${PASSWORD_ENV})")
    common.add_argument("--creds", metavar="FILE", help="with --nats: a NATS credentials file instead of user and password")
    common.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"with --nats: the deployment's subject prefix (default {DEFAULT_PREFIX})")
    ns_opt = argparse.ArgumentParser(add_help=False)
    ns_opt.add_argument("--ns", help="namespace TENANT/AGENT (optional when the home has only one)")
    ns_req = argparse.ArgumentParser(add_help=False)
    ns_req.add_argument("--ns", required=True, help="namespace TENANT/AGENT, e.g. acme/agent7")

    p = argparse.ArgumentParser(prog="vmem", description="vmem: a virtual-memory runtime for LLM context.")
    p.add_argument("--home", default=None, help="vmem home directory (default: $VMEM_HOME, else ./.vmem)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", parents=[common], help="create a vmem home", description="Create a vmem home directory.")
    s.set_defaults(run=cmd_init, sync=True)

    s = sub.add_parser("ingest", parents=[common, ns_req], help="split a text file into pages",
                       description="Split a UTF-8 text file into pages and append them to a namespace's log.")
    s.add_argument("path", help="UTF-8 text or markdown file")
    s.add_argument("--page-tokens", type=int, default=DEFAULT_PAGE_TOKENS,
                   help=f"maximum tokens per page (default {DEFAULT_PAGE_TOKENS})")
    s.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help=f"refuse larger files (default {DEFAULT_MAX_BYTES})")
    s.set_defaults(run=cmd_ingest)

    s = sub.add_parser("ask", parents=[common, ns_req], help="run one turn",
                       description="Ask a question: pack a prompt within the budget, call the model, resolve page faults.")
    s.add_argument("question")
    s.add_argument("--budget", type=int, help="prompt budget in tokens (window minus reserved output)")
    s.add_argument("--profile", help="a built-in model profile (its window minus reserved output is the budget)")
    s.add_argument("--model", default="offline", help="model: offline (a deterministic stand-in, not an LLM)")
    s.add_argument("--max-faults", type=int, default=3, help="page faults allowed per turn (default 3)")
    s.set_defaults(run=cmd_ask)

    s = sub.add_parser("show", parents=[common, ns_opt], help="print a stored block", description="Print a stored block by id.")
    s.add_argument("block_id")
    s.set_defaults(run=cmd_show)

    s = sub.add_parser("trace", help="packed-prompt traces", description="Inspect the trace of each packed prompt.")
    tsub = s.add_subparsers(dest="trace_command", required=True, metavar="SUBCOMMAND")
    t = tsub.add_parser("show", parents=[common, ns_opt], help="what a turn's prompts held and left out",
                        description="Show a turn's traces: chosen blocks per section, and what was left out and why.")
    t.add_argument("turn", type=int)
    t.set_defaults(run=cmd_trace_show)
    t = tsub.add_parser("diff", parents=[common, ns_opt], help="what entered and left between two turns",
                        description="Compare the last prompt traces of two turns: blocks that entered, that left (and why), and section sizes.")
    t.add_argument("turn_a", type=int)
    t.add_argument("turn_b", type=int)
    t.set_defaults(run=cmd_trace_diff)

    s = sub.add_parser("log", help="the event log", description="Read the event log.")
    lsub = s.add_subparsers(dest="log_command", required=True, metavar="SUBCOMMAND")
    t = lsub.add_parser("tail", parents=[common, ns_opt], help="the last events (and, with --follow, new ones)",
                        description="Print the last events of a namespace; with --follow, go on printing events as they "
                                    "are committed (until Ctrl-C).")
    t.add_argument("-n", type=int, default=20, help=f"how many events (default 20, at most {MAX_READ})")
    t.add_argument("-f", "--follow", action="store_true", help="go on printing committed events as they come")
    t.add_argument("--kind", action="append", metavar="TYPE",
                   help="only events of this type, e.g. page_evicted (repeatable)")
    t.set_defaults(run=cmd_log_tail)

    s = sub.add_parser("replay", parents=[common, ns_opt], help="re-fold the log and compare",
                       description="Re-fold a namespace's log from zero and compare the state hash with the live state; "
                                   "--verify also re-packs every traced prompt and re-runs every pager decision.")
    s.add_argument("--until", type=int, help="stop at this sequence")
    s.add_argument("--verify", action="store_true", help="also re-pack each traced prompt and compare its sha256")
    s.set_defaults(run=cmd_replay)

    s = sub.add_parser("chat", parents=[common, ns_req], help="talk to an agent with memory",
                       description="Chat with an agent whose memory is vmem: interactive on a terminal, otherwise one "
                                   "reply per input line. State persists in the home.")
    s.add_argument("--model", default="offline", choices=("offline", "openai", "anthropic"),
                   help="offline (a deterministic stand-in, not an LLM), or an API configured by environment: "
                        "OPENAI_BASE_URL/OPENAI_API_KEY/VMEM_OPENAI_MODEL or ANTHROPIC_API_KEY/VMEM_ANTHROPIC_MODEL")
    s.add_argument("--budget", type=int, help=f"prompt budget in tokens (default: the profile's, or {DEFAULT_CHAT_BUDGET})")
    s.add_argument("--profile", help="a built-in model profile")
    s.add_argument("--when", help="timestamp recorded on messages (default: now, UTC)")
    s.set_defaults(run=cmd_chat)

    s = sub.add_parser("handoff", help="hand work to another agent", description="Export or import a snapshot of pointers.")
    hsub = s.add_subparsers(dest="handoff_command", required=True, metavar="SUBCOMMAND")
    t = hsub.add_parser("export", parents=[common, ns_req], help="print a snapshot of this agent's pointers",
                        description="Print a hand-off snapshot (pointers, not payloads) of a namespace as JSON.")
    t.set_defaults(run=cmd_handoff_export)
    t = hsub.add_parser("import", parents=[common, ns_req], help="take over another agent's snapshot",
                        description="Import a hand-off snapshot into a namespace; its blocks page in lazily. Across "
                                    "tenants only with a grant from the source tenant.")
    t.add_argument("snapshot", help="snapshot file (or - for stdin)")
    t.set_defaults(run=cmd_handoff_import)

    s = sub.add_parser("grant", parents=[common], help="let another tenant import hand-offs",
                       description=f"Record a grant from TENANT (in TENANT/{GRANTS_AGENT}): TO may import hand-offs from "
                                   f"TENANT's agents.")
    s.add_argument("--tenant", required=True, help="the source tenant granting")
    s.add_argument("--to", required=True, help="the tenant allowed to import")
    s.add_argument("--agents", default="*", help="comma-separated agents of TO allowed (default *)")
    s.set_defaults(run=cmd_grant)
    s = sub.add_parser("revoke", parents=[common], help="withdraw a grant",
                       description="Withdraw a grant from TENANT to TO: later imports, and page-ins of earlier ones, are refused.")
    s.add_argument("--tenant", required=True)
    s.add_argument("--to", required=True)
    s.set_defaults(run=cmd_revoke)

    s = sub.add_parser("slot", help="working-context slots", description="Define working-context slots.")
    ssub = s.add_subparsers(dest="slot_command", required=True, metavar="SUBCOMMAND")
    t = ssub.add_parser("set", parents=[common, ns_req], help="define or redefine a slot",
                        description="Define (or redefine) a working-context slot of a namespace.")
    t.add_argument("label")
    t.add_argument("--limit", type=int, default=2000, help="size limit in characters (default 2000)")
    t.add_argument("--value", default="", help="initial value")
    t.add_argument("--readonly", action="store_true", help="the model may read it but never edit it")
    t.set_defaults(run=cmd_slot_set)

    s = sub.add_parser("fault", parents=[common, ns_req], help="raise a page fault",
                       description="Page in what a query finds and/or given blocks, evicting what no longer fits the budget.")
    s.add_argument("--query", help="words to search for")
    s.add_argument("--block", action="append", metavar="ID", help="a block id to load (repeatable)")
    s.add_argument("--budget", type=int, default=DEFAULT_FAULT_BUDGET,
                   help=f"the prompt budget the resident set must fit (default {DEFAULT_FAULT_BUDGET})")
    s.set_defaults(run=cmd_fault)
    s = sub.add_parser("evict", parents=[common, ns_req], help="evict resident blocks",
                       description="Evict resident blocks (pinned ones are refused); evicted pages are summarised.")
    s.add_argument("block", nargs="+", help="block ids")
    s.set_defaults(run=cmd_evict)
    for name, pin in (("pin", True), ("unpin", False)):
        s = sub.add_parser(name, parents=[common, ns_req], help=f"{name} blocks",
                           description="Pin blocks: resident from now on and never evicted." if pin else
                           "Unpin blocks: they stay resident until evicted.")
        s.add_argument("block", nargs="+", help="block ids")
        s.set_defaults(run=cmd_pin, pin=pin)

    s = sub.add_parser("schema", parents=[common], help="print the wire schemas as JSON Schema",
                       description="Print the JSON Schema of vmem's requests, replies, notifications and events, so a "
                                   "program in any language can talk to the actors (msgpack or JSON on NATS).")
    s.add_argument("--kind", choices=("all", "requests", "replies", "events", "notifications"), default="all",
                   help="which family (default all)")
    s.set_defaults(run=cmd_schema, sync=True)

    s = sub.add_parser("demo", parents=[common], help="the main job, offline",
                       description="Ingest a document at least 20x the budget, ask questions that fault pages in, evict "
                                   "and summarise, then replay.")
    s.add_argument("--budget", type=int, default=1024, help="prompt budget in tokens (default 1024)")
    s.set_defaults(run=cmd_demo, demo=True)
    add_distributed_commands(sub, [base])
    add_ops_commands(sub, [], routes=tuple(ROUTES))
    return p


@asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[Vmem]:
    if getattr(args, "nats", None):
        if getattr(args, "demo", False):
            raise UsageError("vmem demo runs embedded; drop --nats")
        if args.backend != "asyncio":
            raise UsageError("--nats needs the asyncio backend (nats-py supports nothing else); drop --backend")
        async with Vmem.connect(args.nats, user=args.user, password=os.environ.get(PASSWORD_ENV), creds=args.creds,
                                prefix=args.prefix) as vm:
            yield vm
        return
    kind = getattr(args, "model", "offline")
    # With a real model, conversation summaries are written by it too.
    summariser = _model(kind) if kind in ("openai", "anthropic") else None
    async with Vmem.open(resolve_home(args.home), create=getattr(args, "demo", False), embedder=_embedder(args.embedder),
                         summariser=summariser) as vm:
        yield vm


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "sync", False):
            return args.run(args)

        async def run() -> int:
            async with _open(args) as vm:
                return await args.run(vm, args)

        try:
            return anyio.run(run, backend=args.backend)
        except BaseExceptionGroup as group:
            raise lone_error(group) from None
    except VmemError as exc:
        print(f"vmem: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
