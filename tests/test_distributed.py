"""Distributed mode: vmem serve and compressor workers as separate processes on a real nats-server.

* A turn end to end: ``vmem serve`` and ``vmem worker compressor`` run in
  other processes; this process, a client with nothing but the NATS URL,
  ingests, asks questions that fault pages in and evict others (summarised by
  the pager with the fault), and replays; ``vmem replay --nats`` agrees, and the same inputs
  give the same events and the same state hash as the embedded runtime.
* A worker SIGKILLed in the middle of a job: the job is redelivered to
  another worker and exactly one summary is committed; the same when the
  worker dies after its commit and before its acknowledgement.
* A slow worker does not stall the others.

Each test uses its own subject prefix (its own streams and job queue).
asyncio only (nats-py).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from natsserver import NatsServer, nats_server  # noqa: F401 - fixture
from procs import Proc, procs, ready, vmem_cmd  # noqa: F401 - fixture
from procs import start_serve as serve_proc
from procs import start_worker as worker_proc

from vmem import Vmem
from vmem.errors import ActorError, HomeError, UsageError
from vmem.nats.connection import NatsConnection
from vmem.nats.jetstream_log import JetStreamLog
from vmem.nats.jobs import JetStreamJobQueue
from vmem.schemas import events as ev
from vmem.schemas.messages import CompressDone, CompressJob
from vmem.service.distributed import CACHE_MARKER, open_cache_home
from vmem.state.blocks import make_block
from vmem.state.fold import State, fold, state_hash
from vmem.storage.home import Home
from vmem.storage.lmdb_log import LmdbLog
from vmem.storage.log import read_all

ROOT = Path(__file__).resolve().parents[1]
NS = "acme/agent7"
QUESTIONS = (
    "What is the radio callsign of Gannet Point station?",
    "Who is the principal keeper of Cape Wrath?",
    "When was Ailsa Craig lighthouse first lit?",
    "What is the radio callsign of Sumburgh station?",
)
_prefixes = itertools.count()

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return f"d{os.getpid()}-{next(_prefixes)}"


def start_serve(procs: list[Proc], server: NatsServer, home: Path, prefix: str, *extra: str) -> Proc:
    return serve_proc(procs, server.url, home, "--prefix", prefix, *extra, monitor=server.monitor_url)


def start_worker(procs: list[Proc], server: NatsServer, home: Path, prefix: str, *extra: str) -> Proc:
    return worker_proc(procs, server.url, home, "--prefix", prefix, *extra)


async def all_events(log: Any, ns: str) -> list[ev.Event]:
    return [s.event async for batch in read_all(log, ns) for s in batch]


async def client_events(vm: Vmem, ns: str) -> list[ev.Event]:
    return [s.event async for batch in vm.events(ns) for s in batch]


# -- a turn end to end -----------------------------------------------------------------------


async def test_turns_end_to_end_with_serve_and_a_worker_in_other_processes(
    nats_server: NatsServer, tmp_path: Path, handbook_file: Path, procs: list[Proc], prefix: str
) -> None:
    serve = start_serve(procs, nats_server, tmp_path / "serve", prefix)
    worker = start_worker(procs, nats_server, tmp_path / "worker", prefix)
    await serve.wait_for(ready)
    await worker.wait_for(ready)

    answers = []
    async with Vmem.connect(nats_server.url, prefix=prefix) as vm:  # a URL, nothing else: no JetStream rights, no local home
        ingested = await vm.ingest(NS, handbook_file)
        assert ingested.pages > 50
        for q in QUESTIONS:
            answers.append(await vm.ask(NS, q, budget=800))
        report = await vm.replay(NS, verify=True)
        distributed = await client_events(vm, NS)
    assert not (tmp_path / "client").exists()
    assert "GAN100" in answers[0].answer and "SUM601" in answers[3].answer
    assert all(a.answered for a in answers)
    summaries = [s for a in answers for s in a.summaries]
    # The pager summarises what a fault evicts in the fault's own transaction
    # (the worker takes conversation flushes and submitted jobs: tested below).
    assert summaries, "budget 800 must evict pages, and their summaries are committed with the fault"
    assert report.equal and report.prompts_checked == report.prompts_equal == len(QUESTIONS)

    # `vmem replay --nats` from yet another process: a request to the service's reader.
    out = subprocess.run(
        vmem_cmd("replay", "--nats", nats_server.url, "--prefix", prefix, "--ns", NS, "--verify", "--json"),
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    replayed = json.loads(out.stdout)
    assert replayed["equal"] and replayed["state_hash"] == report.state_hash and replayed["events"] == report.events

    # The same inputs, embedded on LMDB: the same events, so the same state hash.
    async with Vmem.open(tmp_path / "embedded", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        embedded_answers = [await vm.ask(NS, q, budget=800) for q in QUESTIONS]
        embedded_report = await vm.replay(NS)
        embedded = await client_events(vm, NS)
    assert [a.answer for a in embedded_answers] == [a.answer for a in answers]
    assert [a.prompt_sha256 for a in embedded_answers] == [a.prompt_sha256 for a in answers]
    assert embedded == distributed
    assert embedded_report.state_hash == report.state_hash


async def test_same_events_give_the_same_state_hash_on_lmdb_and_jetstream(nats_server: NatsServer, tmp_path: Path, prefix: str) -> None:
    batches: list[list[ev.Event]] = []
    for b in range(40):
        batch: list[ev.Event] = []
        for i in range(25):
            blk = make_block(NS, "page", "document", f"batch {b} page {i} " + "lighthouse keeper log " * 10, {"doc": "d", "page": str(b * 25 + i)})
            batch += [blk, ev.PageLoaded(ns=NS, block_id=blk.block_id, turn=b, reason="prefetch")]
            if i % 5 == 4:
                batch.append(ev.PageEvicted(ns=NS, block_id=blk.block_id, turn=b, reason="lru"))
        batches.append(batch)
    lmdb = LmdbLog.open(tmp_path / "lmdb")
    js = await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix})
    try:
        for b, batch in enumerate(batches):
            await lmdb.append(NS, batch, key=f"b{b}")
            await js.append(NS, batch, key=f"b{b}")
        hashes = []
        for log in (lmdb, js):
            state = State(ns=NS)
            async for chunk in read_all(log, NS, batch=333):
                fold((s.event for s in chunk), state)
            hashes.append(state_hash(state))
        assert hashes[0] == hashes[1]
    finally:
        await js.aclose()
        await lmdb.aclose()


# -- compressor workers ------------------------------------------------------------------------


async def seed(url: str, prefix: str, pages: int = 6) -> tuple[NatsConnection, JetStreamLog, list[str]]:
    conn = await NatsConnection.connect(url)
    log = JetStreamLog(conn, prefix=prefix)
    blocks = [make_block(NS, "page", "document", f"Page {i}. The keeper of station {i} logs the weather at dawn.", {"page": str(i)}) for i in range(pages)]
    await log.append(NS, blocks, key="seed")
    return conn, log, [b.block_id for b in blocks]


async def summaries_of(log: JetStreamLog, job_id: str) -> list[ev.SummaryCommitted]:
    return [e for e in await all_events(log, NS) if isinstance(e, ev.SummaryCommitted) and e.job_id == job_id]


@pytest.mark.parametrize("when", ["mid-job", "after-commit"])
async def test_a_killed_worker_job_is_redelivered_and_committed_once(
    nats_server: NatsServer, tmp_path: Path, procs: list[Proc], prefix: str, when: str
) -> None:
    conn, log, ids = await seed(nats_server.url, prefix)
    try:
        jobs = JetStreamJobQueue(conn, prefix=prefix, ack_wait=1.0)
        await jobs.ensure()
        if when == "mid-job":
            # The CLI worker, stuck in a long (simulated) model call when it is SIGKILLed.
            doomed = start_worker(procs, nats_server, tmp_path / "doomed", prefix, "--simulate-latency-ms", "60000")
        else:
            # A worker that dies right after its commit, before acknowledging the job.
            code = textwrap.dedent(
                f"""
                import json, os, anyio
                from vmem.service.distributed import run_worker
                def show(e): print(json.dumps(e), flush=True)
                def die(job, done):
                    show({{"event": "committed", "job": job.job_id, "summary": done.summary_id}})
                    os._exit(9)
                anyio.run(lambda: run_worker({nats_server.url!r}, home={str(tmp_path / 'doomed')!r}, prefix={prefix!r},
                                             on_ready=show, on_event=show, after_commit=die), backend="asyncio")
                """
            )
            doomed = Proc([sys.executable, "-c", code], cwd=tmp_path)
            procs.append(doomed)
        await doomed.wait_for(ready)
        job = CompressJob(ns=NS, job_id="evict:t1a0", sources=tuple(ids[:3]), turn=1)
        results: list[CompressDone] = []
        async with anyio.create_task_group() as tg:

            async def submit() -> None:
                results.append(await jobs.submit(job, timeout=60))

            tg.start_soon(submit)
            if when == "mid-job":
                await doomed.wait_for(lambda o: o.get("event") == "started" and o.get("job") == job.job_id)
            else:
                await doomed.wait_for(lambda o: o.get("event") == "committed")
            doomed.kill()
            rescuer = start_worker(procs, nats_server, tmp_path / "rescuer", prefix)
            done = await rescuer.wait_for(lambda o: o.get("event") == "done" and o.get("job") == job.job_id)
        assert done["delivery"] >= 2  # a redelivery, not a second job
        [result] = results
        committed = await summaries_of(log, job.job_id)
        assert len(committed) == 1, committed
        assert result.summary_id == committed[0].summary_id == done["summary"]
        assert result.duplicate == (when == "after-commit")
    finally:
        await log.aclose()
        await conn.aclose()


async def test_a_slow_worker_does_not_stall_the_others(nats_server: NatsServer, tmp_path: Path, procs: list[Proc], prefix: str) -> None:
    conn, log, ids = await seed(nats_server.url, prefix)
    try:
        jobs = JetStreamJobQueue(conn, prefix=prefix)
        await jobs.ensure()
        slow = start_worker(procs, nats_server, tmp_path / "slow", prefix, "--simulate-latency-ms", "3000")
        fast = start_worker(procs, nats_server, tmp_path / "fast", prefix)
        await slow.wait_for(ready)
        await fast.wait_for(ready)
        n = 12
        results: dict[str, float] = {}
        start = time.monotonic()

        async def submit(k: int) -> None:
            job = CompressJob(ns=NS, job_id=f"evict:slow{k}", sources=(ids[k % len(ids)], ids[(k + 1) % len(ids)]), turn=k)
            await jobs.submit(job, timeout=60)
            results[job.job_id] = time.monotonic() - start

        async with anyio.create_task_group() as tg:
            for k in range(n):
                tg.start_soon(submit, k)
        assert len(results) == n
        by_slow = [o["job"] for o in slow.drain() if o.get("event") == "started"]
        # The slow worker holds one job at a time; the fast one runs everything else meanwhile.
        assert len(by_slow) <= 1, by_slow
        quick = sorted(t for j, t in results.items() if j not in by_slow)
        assert len(quick) >= n - 1 and quick[-1] < 2.5, quick
    finally:
        await log.aclose()
        await conn.aclose()


# -- cache homes ------------------------------------------------------------------------------------


async def test_cache_homes_and_embedded_homes_do_not_mix(nats_server: NatsServer, tmp_path: Path, handbook_file: Path, prefix: str) -> None:
    async with Vmem.open(tmp_path / "embedded", create=True) as vm:
        await vm.ingest(NS, handbook_file)
    js = await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix})
    try:
        with pytest.raises(HomeError, match="embedded"):
            await open_cache_home(tmp_path / "embedded", js, prefix=prefix)
        home = await open_cache_home(tmp_path / "cache", js, prefix=prefix)
        home.env.close()
        assert (tmp_path / "cache" / CACHE_MARKER).is_file()
        with pytest.raises(HomeError, match="distributed"):
            Home.open(tmp_path / "cache")
        with pytest.raises(HomeError, match="prefix"):
            await open_cache_home(tmp_path / "cache", js, prefix="other")
    finally:
        await js.aclose()


async def test_serve_hosts_only_the_namespaces_it_is_given(nats_server: NatsServer, tmp_path: Path, prefix: str) -> None:
    from vmem import Client
    from vmem.bus.subjects import Subjects
    from vmem.errors import NoResponders, UnknownNamespace
    from vmem.nats.bus import NatsBus
    from vmem.schemas.messages import PackReply, TurnRequest
    from vmem.service.distributed import serve

    ready_event = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(nats_server.url, home=tmp_path / "serve", namespaces=["acme/*", "globex/agent1"],
                                    prefix=prefix, monitor=nats_server.monitor_url, on_ready=lambda _i: ready_event.set()))
        with anyio.fail_after(30):
            await ready_event.wait()
        async with await NatsBus.connect(nats_server.url) as bus:
            client = Client(bus, subjects=Subjects(prefix))
            for ns in ("initech/agent1", "globex/agent2"):
                with pytest.raises(NoResponders):
                    await client._call(ns, "pager", "turn", TurnRequest(ns=ns, turn=1, attempt=0, budget=512), PackReply, timeout=5)
            for ns in ("acme/agent9", "globex/agent1"):
                # Served: the pager answers (that the namespace has no turn yet).
                with pytest.raises(UnknownNamespace):
                    await client._call(ns, "pager", "turn", TurnRequest(ns=ns, turn=1, attempt=0, budget=512), PackReply, timeout=10)
        tg.cancel_scope.cancel()


async def test_serve_refuses_a_weaker_setup_unless_told(tmp_path: Path, prefix: str) -> None:
    """A server that syncs JetStream periodically may lose acknowledged appends: serve refuses it."""
    from vmem.service.distributed import serve

    with tempfile.TemporaryDirectory(prefix="vmem-weak-") as tmp:
        weak = NatsServer(Path(tmp))
        weak.config.write_text(weak.config.read_text().replace("sync_interval: always", "sync_interval: 2m"))
        with weak:
            with anyio.fail_after(30), pytest.raises(UsageError, match="sync_interval: always"):
                await serve(weak.url, home=tmp_path / "serve", namespaces=["acme/*"], prefix=prefix, monitor=weak.monitor_url)
            ready_info: list[dict[str, Any]] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: serve(weak.url, home=tmp_path / "serve2", namespaces=["acme/*"], prefix=prefix,
                                            monitor=weak.monitor_url, allow_weak_setup=True, on_ready=ready_info.append))
                with anyio.fail_after(30):
                    while not ready_info:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            assert any("sync_interval" in p for p in ready_info[0]["weak_setup"])


POISON_WORKER = """
import json, anyio
import vmem.actors.compressor as compressor
from vmem.service.distributed import run_worker

real = compressor.extractive_summary

def summary(texts, tok):  # a bug some jobs trigger: not a vmem error
    if any("POISON" in t for t in texts):
        raise RuntimeError("the summariser cannot take this text")
    return real(texts, tok)

compressor.extractive_summary = summary
def show(e): print(json.dumps(e), flush=True)
anyio.run(lambda: run_worker({url!r}, home={home!r}, prefix={prefix!r}, ack_wait=2.0, dead_after=2,
                             on_ready=show, on_event=show), backend="asyncio")
"""


async def test_a_poison_job_is_dead_lettered_with_an_event_and_the_worker_goes_on(
    nats_server: NatsServer, tmp_path: Path, procs: list[Proc], prefix: str
) -> None:
    conn, log, ids = await seed(nats_server.url, prefix)
    poison = make_block(NS, "page", "document", "POISON: text the summariser chokes on.", {"page": "99"})
    await log.append(NS, [poison], key="poison")
    try:
        jobs = JetStreamJobQueue(conn, prefix=prefix, ack_wait=2.0, dead_after=2)
        await jobs.ensure()
        worker = Proc([sys.executable, "-c", POISON_WORKER.format(url=nats_server.url, home=str(tmp_path / "w"), prefix=prefix)],
                      cwd=tmp_path)
        procs.append(worker)
        await worker.wait_for(ready)
        bad = CompressJob(ns=NS, job_id="evict:poison", sources=(poison.block_id,), turn=1)
        with anyio.fail_after(60), pytest.raises(ActorError, match="cannot take this text"):
            await jobs.submit(bad, timeout=60)
        given_up = await worker.wait_for(lambda o: o.get("event") == "failed" and o.get("dead_letter"))
        assert given_up["delivery"] == 2
        # The same worker takes the next job.
        good = await jobs.submit(CompressJob(ns=NS, job_id="evict:good", sources=(ids[0],), turn=1), timeout=60)
        assert good.summary_id and worker.proc.poll() is None
        # The namespace records it, and the job is kept in the dead-letter stream.
        events = await all_events(log, NS)
        dead = [e for e in events if isinstance(e, ev.ErrorRaised) and e.code == "dead_letter"]
        assert len(dead) == 1 and "evict:poison" in dead[0].message and "2 deliveries" in dead[0].message
        info = await conn.request(f"$JS.API.STREAM.INFO.{jobs.dead_stream}", b"", timeout=5)
        assert json.loads(info.data)["state"]["messages"] == 1
    finally:
        await log.aclose()
        await conn.aclose()


# -- embedders -----------------------------------------------------------------------------


async def test_the_service_names_its_embedder_and_reindexes_over_nats(
    nats_server: NatsServer, tmp_path: Path, handbook_file: Path, procs: list[Proc], prefix: str
) -> None:
    from vmem import HashingEmbedder

    hashing = HashingEmbedder().id
    serve = start_serve(procs, nats_server, tmp_path / "serve", prefix, "--embedder", "hashing")
    up = await serve.wait_for(ready)
    assert up["embedder"] == hashing
    async with Vmem.connect(nats_server.url, prefix=prefix) as vm:
        assert await vm.embedder(NS) == hashing
        await vm.ingest(NS, handbook_file)
        steps: list[tuple[int, int]] = []
        reply = await vm.reindex(NS, progress=lambda done, total: steps.append((done, total)))
        assert reply.done and reply.embedder == reply.previous == hashing and reply.vectors > 50
        assert steps[-1][0] == steps[-1][1] == reply.through_seq
        assert (await vm.search(NS, "radio callsign of Gannet Point")).candidates
    # A client that insists on another embedder than the service's is refused, typed, with what to do.
    out = subprocess.run(
        vmem_cmd("reindex", "--nats", nats_server.url, "--prefix", prefix, "--ns", NS, "--embedder", "minilm"),
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 2
    assert f"this retriever embeds with '{hashing}', not 'minilm-l6-v2/384'" in out.stderr
    asked = subprocess.run(
        vmem_cmd("ask", "Who is the principal keeper of Cape Wrath?", "--nats", nats_server.url, "--prefix", prefix,
                 "--ns", NS, "--budget", "900", "--json"),
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["embedder"] == hashing
