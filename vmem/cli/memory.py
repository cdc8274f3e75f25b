"""CLI commands that change what an agent remembers: slots, page faults, eviction, pins, hand-offs and grants."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vmem.assembly.profiles import DEFAULT_BUDGET
from vmem.cli.common import Parents, embedder_of, out, read_file, say_embedder, with_embedder
from vmem.paging.handoff import GRANTS_AGENT, parse_snapshot
from vmem.schemas.messages import DEFAULT_SLOT_LIMIT
from vmem.service.vmem import Vmem


async def cmd_slot_set(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.define_slot(args.ns, args.label, limit=args.limit, value=args.value, readonly=args.readonly)
    if args.json:
        out({"ns": args.ns, "label": args.label, "limit": args.limit, "readonly": args.readonly})
    else:
        print(f"slot {args.label} of {args.ns}: {len(args.value)}/{args.limit} characters{' (read-only)' if args.readonly else ''}")
    return 0


async def cmd_fault(vm: Vmem, args: argparse.Namespace) -> int:
    embedder = await embedder_of(vm, args.ns) if args.query else ""
    r = await vm.fault(args.ns, query=args.query or "", block_ids=args.block or (), budget=args.budget)
    if args.json:
        out(with_embedder(r, embedder) if embedder else r)
    else:
        print(f"loaded {len(r.loaded)}: {' '.join(b[:12] for b in r.loaded) or '-'}; evicted {len(r.evicted)}: "
              f"{' '.join(b[:12] for b in r.evicted) or '-'}" + (f"; {r.error}" if r.error else ""))
        if embedder:
            say_embedder(args, embedder)
    return 0 if not r.error else 1


async def cmd_evict(vm: Vmem, args: argparse.Namespace) -> int:
    r = await vm.evict(args.ns, args.block)
    if args.json:
        out(r)
    else:
        print(f"evicted {len(r.evicted)}" + (f"; refused (pinned) {' '.join(b[:12] for b in r.refused)}" if r.refused else ""))
    return 0 if not r.refused else 1


async def cmd_pin(vm: Vmem, args: argparse.Namespace) -> int:
    r = await (vm.pin if args.pin else vm.unpin)(args.ns, args.block)
    if args.json:
        out(r)
    else:
        what = "pinned" if args.pin else "unpinned"
        print(f"{what} {len(r.changed)}" + (f"; unknown {' '.join(r.unknown)}" if r.unknown else ""))
    return 0 if not r.unknown else 1


async def cmd_handoff_export(vm: Vmem, args: argparse.Namespace) -> int:
    out(await vm.handoff_export(args.ns))
    return 0


async def cmd_handoff_import(vm: Vmem, args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.snapshot == "-" else read_file(Path(args.snapshot))
    snap = parse_snapshot(data)
    n = await vm.handoff_import(snap, args.ns)
    if args.json:
        out({"ns": args.ns, "source_ns": snap.source_ns, "snapshot_id": snap.snapshot_id, "pointers": n})
    else:
        print(f"imported {n} pointers from {snap.source_ns} into {args.ns} (snapshot {snap.snapshot_id}); "
              f"they page in on {args.ns}'s next turn")
    return 0


async def cmd_grant(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.grant(args.tenant, args.to, agents=args.agents)
    if args.json:
        out({"tenant": args.tenant, "to": args.to, "agents": args.agents, "granted": True})
    else:
        print(f"{args.tenant} now lets {args.to} import hand-offs from agents {args.agents}")
    return 0


async def cmd_revoke(vm: Vmem, args: argparse.Namespace) -> int:
    await vm.revoke(args.tenant, args.to)
    if args.json:
        out({"tenant": args.tenant, "to": args.to, "granted": False})
    else:
        print(f"{args.tenant} no longer lets {args.to} import hand-offs")
    return 0


def add_memory_commands(sub: Any, parents: Parents) -> None:
    """Register slot, fault, evict, pin, unpin, handoff, grant and revoke."""
    common, ns_req = parents.common, parents.ns_req
    s = sub.add_parser("slot", help="working-context slots", description="Define working-context slots.")
    ssub = s.add_subparsers(dest="slot_command", required=True, metavar="SUBCOMMAND")
    t = ssub.add_parser("set", parents=[common, ns_req], help="define or redefine a slot",
                        description="Define (or redefine) a working-context slot of a namespace.")
    t.add_argument("label")
    t.add_argument("--limit", type=int, default=DEFAULT_SLOT_LIMIT,
                   help=f"size limit in characters (default {DEFAULT_SLOT_LIMIT})")
    t.add_argument("--value", default="", help="initial value")
    t.add_argument("--readonly", action="store_true", help="the model may read it but never edit it")
    t.set_defaults(run=cmd_slot_set)

    s = sub.add_parser("fault", parents=[common, ns_req], help="raise a page fault",
                       description="Page in what a query finds and/or given blocks, evicting what no longer fits the budget.")
    s.add_argument("--query", help="words to search for")
    s.add_argument("--block", action="append", metavar="ID", help="a block id to load (repeatable)")
    s.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"the prompt budget the resident set must fit (default {DEFAULT_BUDGET})")
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
