"""The `vmem` command line: a thin shell over the async API (vmem.client.client).

Every client command works embedded (``--home``, else ``$VMEM_HOME``, else
``./.vmem``: the actors run in this process) or against a deployment
(``--nats URL`` with the tenant's ``--user`` and ``$VMEM_NATS_PASSWORD`` or
``--creds``: the actors are ``vmem serve``'s).  Most commands take ``--json``
for stable machine-readable output.  Errors print one line naming what was
wrong and what to do, and exit non-zero.  The commands live by what they do:
:mod:`~vmem.cli.turns`, :mod:`~vmem.cli.memory`, :mod:`~vmem.cli.inspect`,
:mod:`~vmem.cli.distributed` and :mod:`~vmem.cli.ops`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from vmem.cli.common import HOME_HELP, PASSWORD_ENV, make_embedder, make_model, parents
from vmem.cli.distributed import add_distributed_commands
from vmem.cli.inspect import add_inspect_commands
from vmem.cli.memory import add_memory_commands
from vmem.cli.ops import add_ops_commands
from vmem.cli.turns import add_turn_commands
from vmem.client.schema import ROUTES
from vmem.errors import UsageError, VmemError, lone_error
from vmem.service.vmem import Vmem
from vmem.storage.home import resolve_home


def _parser() -> argparse.ArgumentParser:
    shared = parents()
    p = argparse.ArgumentParser(prog="vmem", description="vmem: a virtual-memory runtime for LLM context.")
    p.add_argument("--home", default=None, help=HOME_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_turn_commands(sub, shared)
    add_inspect_commands(sub, shared)
    add_memory_commands(sub, shared)
    add_distributed_commands(sub, [shared.base])
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
    summariser = make_model(kind) if kind in ("openai", "anthropic") else None
    async with Vmem.open(resolve_home(args.home), create=getattr(args, "demo", False), embedder=make_embedder(args.embedder),
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
