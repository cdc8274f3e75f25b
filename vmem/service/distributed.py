"""Distributed mode's processes: ``vmem serve`` and ``vmem worker compressor``.

The processes of a deployment share one NATS server (or cluster), connected
with the service's credentials (its own NATS account, which owns the
JetStream streams):

* :func:`serve` hosts the pager, retriever, packer, reducer, memory and
  reader actors on a NATS bus for the namespaces it is given, with the log in
  JetStream; any number of serve processes share the work (every actor
  subscribes in its queue group).  Tenants reach only the request subjects
  their account imports (see ``vmem ops nats-config``).
* :func:`run_worker` pulls compressor jobs from the JetStream work queue and
  commits their summaries; a job that keeps failing is dead-lettered.

Agents connect with :meth:`vmem.Vmem.connect` (a URL and credentials).
Every process keeps a *cache home*: a directory with the LMDB block store,
snapshots and retriever indexes, all projections of the JetStream log and
rebuilt from it when missing.  A cache home is marked as one
(``vmem-cache.json``) and is never an embedded home: the sequences of the
two logs differ, so one directory cannot serve both.

Everything here runs on asyncio only (nats-py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from vmem.actors.compressor import Compressor
from vmem.actors.hosting import build_actors
from vmem.actors.runtime import Report
from vmem.actors.writer import Writer
from vmem.assembly.tokens import get_tokenizer
from vmem.bus.subjects import Subjects, namespace_pattern
from vmem.errors import HomeError, UsageError
from vmem.nats.bus import NatsBus
from vmem.nats.connection import NatsConnection, require_asyncio
from vmem.nats.jetstream_log import DEFAULT_PREFIX, JetStreamLog
from vmem.nats.jobs import DEAD_AFTER, JetStreamJobQueue, JobEvent
from vmem.nats.server_check import DEFAULT_MONITOR_URL, MonitoringUnreachable, check_server_setup, fetch_varz
from vmem.retrieval.choice import default_embedder
from vmem.retrieval.embed import Embedder
from vmem.schemas.messages import CompressDone, CompressJob
from vmem.storage.home import Home
from vmem.storage.log import Log

__all__ = ["CACHE_MARKER", "open_cache_home", "run_worker", "serve"]

CACHE_MARKER = "vmem-cache.json"

Ready = Callable[[dict[str, Any]], None]


async def open_cache_home(path: Path, log: Log, *, prefix: str = DEFAULT_PREFIX) -> Home:
    """Open (creating if needed) the cache home at `path` for a JetStream log.

    HomeError if `path` is an embedded home that holds events, or the cache
    of another deployment prefix.
    """
    path = Path(path)
    marker = path / CACHE_MARKER
    if not marker.exists():
        home = Home.init(path)
        try:
            held = await home.log.namespaces()
        finally:
            await home.aclose()
        if held:
            raise HomeError(
                f"{path} is an embedded vmem home with events ({', '.join(held[:3])}); give distributed "
                f"processes a directory of their own with --home (it only caches the JetStream log)"
            )
        tmp = path / (CACHE_MARKER + ".tmp")
        tmp.write_text(json.dumps({"log": "jetstream", "prefix": prefix}) + "\n")
        os.replace(tmp, marker)
    else:
        try:
            meta = json.loads(marker.read_text())
        except ValueError as exc:
            raise HomeError(f"{marker} is damaged ({exc}); delete the cache directory, it is rebuilt from the log") from None
        if meta.get("prefix") != prefix:
            raise HomeError(
                f"{path} caches the JetStream log of prefix {meta.get('prefix')!r}, not {prefix!r}; use another --home"
            )
    return Home.open(path, log=log)


async def _close_home(home: Home) -> None:
    with anyio.CancelScope(shield=True):
        await home.aclose()


async def _setup_problems(monitor: str, streams: list[dict[str, Any]]) -> list[str]:
    try:
        varz = await fetch_varz(monitor)
    except MonitoringUnreachable as exc:
        return [exc.message]
    return check_server_setup(varz, streams)


async def serve(
    url: str | Sequence[str],
    *,
    home: str | os.PathLike[str],
    namespaces: Sequence[str] = ("*/*",),
    prefix: str = DEFAULT_PREFIX,
    ack_wait: float = 30.0,
    allow_weak_setup: bool = False,
    monitor: str = DEFAULT_MONITOR_URL,
    on_ready: Ready | None = None,
    report: Report | None = None,
    embedder: Embedder | None = None,
    **options: Any,
) -> None:
    """Host the service's actors for `namespaces` until cancelled.

    `namespaces` are ``TENANT/AGENT``, ``TENANT/*`` or ``*/*``; serve creates
    the log streams of the tenants it names.  Compressor jobs go to the
    JetStream work queue (run ``vmem worker compressor``).  Before serving it
    checks the server (its ``/varz`` at the loopback `monitor` URL) and the
    streams: a server older than 2.11, JetStream not syncing every write, or
    a stream not on disk or deletable is refused (UsageError) unless
    `allow_weak_setup`.  `embedder` embeds for vector retrieval (default:
    :func:`~vmem.retrieval.choice.default_embedder`, the best installed); the
    ready report names it.
    """
    require_asyncio("vmem serve")
    embedder = embedder if embedder is not None else default_embedder()
    subjects = Subjects(prefix)
    patterns = [namespace_pattern(ns) for ns in namespaces]  # validate before connecting
    conn = await NatsConnection.connect(url, **{"name": "vmem serve", **options})
    try:
        log = JetStreamLog(conn, prefix=prefix)
        opened = await open_cache_home(Path(home), log, prefix=prefix)
        try:
            async with NatsBus(conn) as bus:
                tenants = sorted({p.split(".")[0] for p in patterns if not p.startswith("*")})
                streams = [await log.ensure_tenant(t) for t in tenants]
                version = await conn.server_version()
                jobs = JetStreamJobQueue(conn, prefix=prefix, ack_wait=ack_wait)
                await jobs.ensure()
                problems = await _setup_problems(monitor, [await log.stream_config(t) for t in tenants]
                                                 + await jobs.stream_configs())
                if problems and not allow_weak_setup:
                    raise UsageError("refusing a weaker setup than vmem needs: " + "; ".join(problems)
                                     + " (fix the server or stream configuration, or pass --allow-weak-setup)")
                hosted = build_actors(opened, bus, jobs=jobs, compressor=False, subjects=subjects, embedder=embedder)
                async with hosted.runtime(bus, namespaces=namespaces, report=report).running():
                    if on_ready is not None:
                        on_ready(
                            {"event": "ready", "role": "serve", "nats": conn.url, "server": version,
                             "actors": [a.name for a in hosted.actors], "namespaces": [p.replace(".", "/") for p in patterns],
                             "home": str(home), "jobs": jobs.stream, "streams": sorted(set(streams)),
                             "weak_setup": problems, "embedder": embedder.id}
                        )
                    await anyio.sleep_forever()
        finally:
            await _close_home(opened)
    finally:
        await conn.aclose()


async def run_worker(
    url: str | Sequence[str],
    *,
    home: str | os.PathLike[str],
    concurrency: int = 1,
    latency: float = 0.0,
    prefix: str = DEFAULT_PREFIX,
    ack_wait: float = 30.0,
    dead_after: int = DEAD_AFTER,
    on_ready: Ready | None = None,
    on_event: JobEvent | None = None,
    after_commit: Callable[[CompressJob, CompressDone], None] | None = None,
    **options: Any,
) -> None:
    """Run compressor jobs from the ``compressors`` work queue until cancelled.

    `latency` seconds are slept per job before compressing, standing in for
    a model call (for benchmarks); `after_commit` is a test hook run between
    a job's commit and its acknowledgement.  A job that fails `dead_after`
    times is dead-lettered with an event, and the worker goes on.
    """
    require_asyncio("vmem worker")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"--concurrency must be a positive int, got {concurrency!r}")
    if latency < 0:
        raise UsageError(f"the simulated latency must not be negative, got {latency}")
    conn = await NatsConnection.connect(url, **{"name": "vmem worker compressor", **options})
    try:
        log = JetStreamLog(conn, prefix=prefix)
        opened = await open_cache_home(Path(home), log, prefix=prefix)
        try:
            get_tokenizer("cl100k_base")  # load it now, not in the first job
            async with NatsBus(conn) as bus:
                queue = JetStreamJobQueue(conn, prefix=prefix, ack_wait=ack_wait, dead_after=dead_after)
                await queue.ensure()
                compressor = Compressor(opened, Writer(opened, bus, Subjects(prefix)))
                if on_ready is not None:
                    on_ready(
                        {"event": "ready", "role": "worker", "kind": "compressor", "nats": conn.url,
                         "concurrency": concurrency, "latency_ms": latency * 1000, "home": str(home),
                         "queue": f"{queue.stream}/compressors", "dead_letters": queue.dead_stream}
                    )
                await queue.serve(compressor.job, concurrency=concurrency, latency=latency, on_event=on_event,
                                  after_commit=after_commit, on_dead=compressor.dead)
        finally:
            await _close_home(opened)
    finally:
        await conn.aclose()
