"""CLI commands that read the record: trace show and diff, log tail, replay, schema."""

from __future__ import annotations

import argparse
import sys
from contextlib import aclosing
from typing import Any

import msgspec

from vmem.cli.common import Parents, default_ns, out
from vmem.errors import UsageError
from vmem.schemas.events import EVENT_BY_TAG
from vmem.schemas.messages import MAX_READ
from vmem.service.vmem import Vmem


async def cmd_trace_show(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await default_ns(vm, args.ns)
    if args.prompt:
        if args.attempt is not None and args.attempt < 1:
            raise UsageError(f"--attempt counts from 1 (the turn's first prompt), not {args.attempt}")
        p = await vm.prompt(ns, args.turn, -1 if args.attempt is None else args.attempt - 1)
        if args.json:
            out(p)
        else:
            print(p.prompt)
            verdict = "matches" if p.equal else f"DIFFERS from the recorded {p.recorded_sha256}"
            print(f"-- turn {p.turn} attempt {p.attempt + 1} (seq {p.seq}), re-rendered from the log: {p.tokens} tokens, "
                  f"sha256 {p.sha256} {verdict}", file=sys.stderr)
        return 0 if p.equal else 1
    traces = await vm.traces(ns, args.turn)
    if args.json:
        out([{"seq": seq, "trace": t} for seq, t in traces])
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
    ns = await default_ns(vm, args.ns)
    d = await vm.trace_diff(ns, args.turn_a, args.turn_b)
    if args.json:
        out(d)
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
        out({"seq": stored.seq, "event": stored.event})
        return
    ev = stored.event
    fields = msgspec.structs.asdict(ev)
    fields.pop("ns", None)
    brief = " ".join(f"{k}={_brief(v)}" for k, v in fields.items())
    print(f"{stored.seq:>8}  {type(ev).__struct_config__.tag:<20} {brief}", flush=True)


async def cmd_log_tail(vm: Vmem, args: argparse.Namespace) -> int:
    ns = await default_ns(vm, args.ns)
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
    ns = await default_ns(vm, args.ns)
    report = await vm.replay(ns, until=args.until, verify=args.verify)
    if args.json:
        out(report)
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


def cmd_schema(args: argparse.Namespace) -> int:
    from vmem.client.schema import json_schema

    out(json_schema(args.kind))
    return 0


def add_inspect_commands(sub: Any, parents: Parents) -> None:
    """Register trace, log, replay and schema."""
    common, ns_opt = parents.common, parents.ns_opt
    s = sub.add_parser("trace", help="packed-prompt traces", description="Inspect the trace of each packed prompt.")
    tsub = s.add_subparsers(dest="trace_command", required=True, metavar="SUBCOMMAND")
    t = tsub.add_parser("show", parents=[common, ns_opt], help="what a turn's prompts held and left out",
                        description="Show a turn's traces: chosen blocks per section, and what was left out and why.")
    t.add_argument("turn", type=int)
    t.add_argument("--prompt", action="store_true",
                   help="print the exact prompt of the turn's last attempt, re-rendered from the log and checked "
                        "against its recorded sha256 (exit 1 if it differs)")
    t.add_argument("--attempt", type=int, metavar="N",
                   help="with --prompt: the turn's N-th prompt (1 = before any page fault of the model) instead of its last")
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

    s = sub.add_parser("schema", parents=[common], help="print the wire schemas as JSON Schema",
                       description="Print the JSON Schema of vmem's requests, replies, notifications and events, so a "
                                   "program in any language can talk to the actors (msgpack or JSON on NATS).")
    s.add_argument("--kind", choices=("all", "requests", "replies", "events", "notifications"), default="all",
                   help="which family (default all)")
    s.set_defaults(run=cmd_schema, sync=True)
