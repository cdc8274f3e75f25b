"""CLI wiring for distributed mode's processes: ``vmem serve`` and ``vmem worker compressor``.

A thin shell over :mod:`vmem.service.distributed`.  These commands run on asyncio
only (nats-py); ``--backend trio`` is refused with a clear message.  They run
until SIGTERM or Ctrl-C, then leave cleanly (a job in progress is redelivered
to another worker).  With ``--json`` every line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from vmem.cli.common import EMBEDDER_HELP
from vmem.errors import UsageError, VmemError, lone_error
from vmem.nats.jetstream_log import DEFAULT_PREFIX
from vmem.nats.jobs import DEAD_AFTER
from vmem.nats.server_check import DEFAULT_MONITOR_URL
from vmem.storage.home import resolve_home

__all__ = ["add_distributed_commands"]

PASSWORD_ENV = "VMEM_NATS_PASSWORD"


def _emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    line = msgspec.json.encode(obj).decode() if getattr(args, "json", False) else text
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _nats_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(args, "creds", None):
        options["creds"] = args.creds
    if getattr(args, "user", None):
        options["user"] = args.user
        options["password"] = os.environ.get(PASSWORD_ENV)
    if getattr(args, "connect_timeout", None) is not None:
        options["connect_timeout"] = args.connect_timeout
    return options


def _url(args: argparse.Namespace) -> str:
    if not args.nats:
        raise UsageError("give the NATS server with --nats URL (or set VMEM_NATS_URL), e.g. --nats nats://127.0.0.1:4222")
    return str(args.nats)


def _check_backend(args: argparse.Namespace) -> None:
    if getattr(args, "backend", "asyncio") != "asyncio":
        raise UsageError(
            f"--backend {args.backend}: distributed mode runs on asyncio only (nats-py, the NATS client, "
            f"supports nothing else); drop --backend"
        )


def _run_until_signalled(main: Callable[[], Awaitable[None]]) -> int:
    """Run `main` on asyncio until it returns or SIGTERM/SIGINT arrives; exit status 0 either way."""

    async def runner() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            await main()
            tg.cancel_scope.cancel()

    try:
        anyio.run(runner, backend="asyncio")
    except BaseExceptionGroup as group:
        leaf = lone_error(group)
        if isinstance(leaf, VmemError):
            raise leaf from None
        raise
    return 0


# -- serve ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from vmem.retrieval.choice import make_embedder
    from vmem.service.distributed import serve

    _check_backend(args)
    url = _url(args)
    home = resolve_home(getattr(args, "home", None))
    embedder = make_embedder(args.embedder)

    def report(info: dict[str, Any]) -> None:
        _emit(args, f"vmem serve: {info['event']} in {info.get('where', '?')} ({info.get('ns', '')}): {info.get('error', '')}", info)

    def ready(info: dict[str, Any]) -> None:
        if info["weak_setup"]:
            _emit(args, "vmem serve: WARNING, weaker setup than vmem needs: " + "; ".join(info["weak_setup"]),
                  {"event": "weak_setup", "problems": info["weak_setup"]})
        _emit(
            args,
            f"vmem serve: ready on {info['nats']} (nats-server {info['server']}): "
            f"{', '.join(info['actors'])} for {', '.join(info['namespaces'])}; embedder {info['embedder']}; "
            f"cache {info['home']}; "
            + (f"streams {', '.join(info['streams'])}; " if info["streams"] else "")
            + f"compressor jobs go to {info['jobs']}",
            info,
        )

    return _run_until_signalled(
        lambda: serve(url, home=home, namespaces=args.ns or ["*/*"], prefix=args.prefix, ack_wait=args.ack_wait,
                      allow_weak_setup=args.allow_weak_setup, monitor=args.monitor, on_ready=ready, report=report,
                      embedder=embedder, **_nats_options(args))
    )


# -- worker ------------------------------------------------------------------------------


def cmd_worker_compressor(args: argparse.Namespace) -> int:
    from vmem.service.distributed import run_worker

    _check_backend(args)
    url = _url(args)
    home = resolve_home(getattr(args, "home", None))

    def ready(info: dict[str, Any]) -> None:
        _emit(
            args,
            f"vmem worker compressor: ready on {info['nats']}: {info['concurrency']} slot(s) in {info['queue']}"
            + (f", simulated model latency {info['latency_ms']:g} ms" if info["latency_ms"] else "")
            + f"; cache {info['home']}",
            info,
        )

    def event(info: dict[str, Any]) -> None:
        kind = info["event"]
        if kind == "done":
            text = (
                f"job {info['job']} ({info['ns']}) done in {info['ms']:g} ms: summary {info['summary'][:16]}"
                + (" (already committed: duplicate)" if info["duplicate"] else "")
                + (f", delivery {info['delivery']}" if info["delivery"] > 1 else "")
            )
        elif kind == "started":
            if not getattr(args, "json", False) and not args.verbose:
                return
            text = f"job {info['job']} ({info['ns']}) started, delivery {info['delivery']}"
        elif kind == "failed":
            text = f"job {info.get('job', '?')} failed: {info['error']}" + (" (will be redelivered)" if info.get("retry") else "")
        else:
            text = f"waiting for NATS: {info.get('reason', '')}"
        _emit(args, text, info)

    return _run_until_signalled(
        lambda: run_worker(url, home=home, concurrency=args.concurrency, latency=args.simulate_latency_ms / 1000,
                           prefix=args.prefix, ack_wait=args.ack_wait, dead_after=args.dead_after, on_ready=ready,
                           on_event=event, **_nats_options(args))
    )


# -- parsers ------------------------------------------------------------------------------------


def _nats_parent(*, env_default: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--nats", metavar="URL", default=os.environ.get("VMEM_NATS_URL") if env_default else None,
        help="NATS server, nats://host:4222" + (" (default: $VMEM_NATS_URL)" if env_default else ""),
    )
    p.add_argument("--user", help=f"the service's NATS user (its password in ${PASSWORD_ENV})")
    p.add_argument("--creds", metavar="FILE", help="NATS credentials file (JWT and seed), instead of user and password")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"subject prefix of the deployment (default {DEFAULT_PREFIX})")
    p.add_argument("--connect-timeout", type=float, default=30.0, metavar="S", help="wait this long for NATS at start (default 30)")
    return p


def add_distributed_commands(subparsers: Any, common_parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``worker compressor`` to the ``vmem`` sub-command parser."""
    nats_opts = _nats_parent(env_default=True)
    parents = [*common_parents, nats_opts]

    s = subparsers.add_parser(
        "serve", parents=parents, help="host the actors on NATS",
        description="Host the pager, retriever, packer and reducer on a NATS bus, with the event log in "
                    "JetStream, for the given namespaces, until SIGTERM. --home is this process's cache of the log.",
    )
    s.add_argument("--ns", action="append", metavar="TENANT/AGENT",
                   help="namespace to host, or TENANT/* for all of a tenant's (repeatable; default: all)")
    s.add_argument("--ack-wait", type=float, default=30.0, metavar="S",
                   help="seconds before an unacknowledged compressor job is redelivered (set when the queue is created; default 30)")
    s.add_argument("--allow-weak-setup", action="store_true",
                   help="start even on a nats-server older than 2.11, without sync_interval: always, or with streams "
                        "that are not on disk or can be deleted (a warning is printed)")
    s.add_argument("--monitor", default=DEFAULT_MONITOR_URL, metavar="URL",
                   help=f"the nats-server monitoring endpoint, for the setup check (default {DEFAULT_MONITOR_URL}; "
                        f"bound to loopback)")
    s.add_argument("--embedder", choices=("auto", "hashing", "minilm"), default=None, help=EMBEDDER_HELP)
    s.set_defaults(run=cmd_serve, sync=True)

    w = subparsers.add_parser("worker", help="run a worker", description="Run a worker process on NATS.")
    wsub = w.add_subparsers(dest="worker_command", required=True, metavar="KIND")
    c = wsub.add_parser(
        "compressor", parents=parents, help="summarise evicted pages",
        description="Join the 'compressors' queue (a JetStream work queue): pull compressor jobs, commit each "
                    "summary once, acknowledge, and answer the submitter. Any number of workers on any number of "
                    "machines share the jobs.",
    )
    c.add_argument("--concurrency", type=int, default=1, metavar="N", help="jobs run at once by this process (default 1)")
    c.add_argument("--simulate-latency-ms", type=float, default=0.0, metavar="MS",
                   help="sleep this long per job before compressing, standing in for a model call (benchmarks)")
    c.add_argument("--ack-wait", type=float, default=30.0, metavar="S",
                   help="seconds before an unacknowledged job is redelivered (set when the queue is created; default 30)")
    c.add_argument("--dead-after", type=int, default=DEAD_AFTER, metavar="N",
                   help=f"give up a job that failed N times: dead-letter it with an event (default {DEAD_AFTER})")
    c.add_argument("-v", "--verbose", action="store_true", help="also print when each job starts")
    c.set_defaults(run=cmd_worker_compressor, sync=True)
