"""Benchmark the LMDB event log: durable appends, replay, and raw LMDB baselines.

    python tools/bench_log.py [--json] [--events N] [--single N] [--batch N]

Everything runs on a real LMDB file in a temporary directory with durable
commits (``sync=True``, LMDB fsyncs at every commit), on realistic events: a
mix of ~1 KB ``BlockWritten`` pages, edges, page loads and evictions, turn and
model events and packed-prompt traces.

Measured through vmem (``LmdbLog``, async API, asyncio):

* ``append_single_per_s``: one event per awaited append (one fsync each).
* ``append_batched_per_s``: batches of ``--batch`` events per append.
* ``replay_per_s``: read the namespace back (``read_all``) and fold it into a
  ``State``, as ``vmem replay`` and a cold ``NamespaceView`` do.
* ``read_decode_per_s``: the same read and decode without the fold.

Baselines in the same process, without vmem: raw LMDB puts of the same encoded
records in transactions of ``--batch`` (``raw_append_batched_per_s``), and a raw
cursor scan of the records (``raw_scan_per_s``); the ``*_ratio`` figures are
vmem / raw.  With ``--json`` the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import anyio
import lmdb
import msgspec

from vmem.schemas import events as ev
from vmem.schemas.codec import decode_record, encode_record
from vmem.state.blocks import make_block
from vmem.state.fold import State, fold, state_hash
from vmem.storage.lmdb_log import LmdbLog
from vmem.storage.log import read_all
from vmem.storage.replay import fold_log

NS = "bench/agent"
TARGETS = {"replay_per_s": 200_000, "append_batched_per_s": 50_000}

_WORDS = (
    "the page table maps every block to a tier resident hot or swap and the pager decides what to "
    "load when the model faults on a page it cannot see while the packer keeps the prompt within "
    "its budget counted with the profile tokenizer summaries stand in for what they summarise"
).split()


def make_events(ns: str, n: int, seed: int = 1) -> list[ev.Event]:
    """A realistic, deterministic mix: ~40% ~1 KB blocks, the rest small events."""
    rng = random.Random(seed)
    paragraphs = [" ".join(rng.choice(_WORDS) for _ in range(170)) for _ in range(64)]
    out: list[ev.Event] = []
    blocks: list[str] = []
    turn = 0
    for i in range(n):
        r = i % 10
        if r < 4 or not blocks:
            kind = "page" if r < 3 else "message"
            attrs = {"doc": "d1", "page": str(i), "source": "manual.md"} if kind == "page" else {"turn": str(turn)}
            text = f"[{i}] " + paragraphs[i % 64]
            block = make_block(ns, kind, "document" if kind == "page" else "user", text, attrs)  # a real content hash
            out.append(block)
            blocks.append(block.block_id)
        elif r == 4:
            out.append(ev.EdgeAdded(ns=ns, src=blocks[-1], dst=rng.choice(blocks), kind="follows"))
        elif r == 5:
            out.append(ev.PageLoaded(ns=ns, block_id=rng.choice(blocks), turn=turn, reason="fault"))
        elif r == 6:
            out.append(ev.PageEvicted(ns=ns, block_id=rng.choice(blocks), turn=turn))
        elif r == 7:
            turn += 1
            if turn % 2:
                out.append(ev.TurnStarted(ns=ns, turn=turn, question="where does the pager keep evicted pages?", budget=4096, model="offline"))
            else:
                out.append(ev.ModelResponded(ns=ns, turn=turn, attempt=0, model="offline", text=" ".join(_WORDS[:40]), input_tokens=3900, output_tokens=60))
        elif r == 8:
            recent = blocks[-8:]
            out.append(
                ev.PromptPacked(
                    ns=ns, turn=turn, attempt=0, profile="offline", budget=4096, prompt_tokens=3900,
                    prompt_sha256=f"{rng.getrandbits(256):064x}",
                    sections=(
                        ev.SectionTrace(name="system", budget=200, tokens=120, blocks=tuple(recent[:1])),
                        ev.SectionTrace(name="pages", budget=3000, tokens=2900, blocks=tuple(recent[1:6])),
                        ev.SectionTrace(name="messages", budget=800, tokens=700, blocks=tuple(recent[6:])),
                    ),
                    left_out=(ev.LeftOut(block_id=blocks[0], section="pages", reason="budget"),),
                )
            )
        else:
            fid = f"f{i}"
            if turn % 2:
                out.append(ev.PageFaultRaised(ns=ns, fault_id=fid, turn=turn, query="evicted pages", block_ids=(rng.choice(blocks),)))
            else:
                out.append(ev.PageFaultResolved(ns=ns, fault_id=fid, turn=turn, loaded=(rng.choice(blocks),), evicted=(rng.choice(blocks),)))
    return out


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _best(fn, repeat: int) -> tuple[float, object]:
    """Fastest of `repeat` runs of `fn()` (seconds) and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


# -- vmem ----------------------------------------------------------------------------


async def bench_vmem(workdir: Path, events: list[ev.Event], single: list[ev.Event], batch: int, repeat: int) -> dict:
    """Appends, then replay.  Empties `events` before replaying, as a fresh process would hold none."""
    res: dict = {}
    log = LmdbLog.open(workdir / "vmem")
    total = len(events)
    try:
        lat: list[float] = []
        t0 = time.perf_counter()
        for e in single:
            t = time.perf_counter()
            await log.append("bench/single", [e])
            lat.append(time.perf_counter() - t)
        res["append_single_per_s"] = len(single) / (time.perf_counter() - t0)
        res["append_single_ms_p50"] = _pct(lat, 0.50) * 1e3
        res["append_single_ms_p99"] = _pct(lat, 0.99) * 1e3

        lat = []
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            t = time.perf_counter()
            await log.append(NS, events[i : i + batch], key=f"b{i}")
            lat.append(time.perf_counter() - t)
        res["append_batched_per_s"] = len(events) / (time.perf_counter() - t0)
        res["append_batch_ms_p50"] = _pct(lat, 0.50) * 1e3
        # Replay in a process that does not also hold every event in memory:
        # otherwise the garbage collector's full passes walk them all, again and again.
        events.clear()
        single.clear()
        gc.collect()

        async def read_decode() -> int:
            n = 0
            async for chunk in read_all(log, NS):
                n += len(chunk)
            return n

        async def replay() -> State:
            # What `vmem replay` and a cold NamespaceView run: the log's fold path.
            state = State(ns=NS)
            await fold_log(log, NS, state)
            return state

        best = float("inf")
        for _ in range(repeat):
            gc.collect()
            t0 = time.perf_counter()
            n = await read_decode()
            best = min(best, time.perf_counter() - t0)
        assert n == total, (n, total)
        res["read_decode_per_s"] = n / best

        best = float("inf")
        for _ in range(repeat):
            gc.collect()
            t0 = time.perf_counter()
            state = await replay()
            best = min(best, time.perf_counter() - t0)
        res["replay_per_s"] = total / best
        # The same replay with the cyclic garbage collector off: what GC costs.
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            await replay()
            res["replay_gc_off_per_s"] = total / (time.perf_counter() - t0)
        finally:
            gc.enable()
        res["state_hash"] = state_hash(state)[:16]
        assert state.clock == total
    finally:
        await log.aclose()
    return res


# -- raw LMDB, no vmem -------------------------------------------------------------------

_U64 = struct.Struct(">Q")


def bench_raw(workdir: Path, records: list[bytes], batch: int, repeat: int) -> dict:
    res: dict = {}
    env = lmdb.open(str(workdir / "raw"), map_size=2**34, max_dbs=4, sync=True, metasync=True)
    try:
        db = env.open_db(b"events")
        prefix = NS.encode() + b"\x00"
        t0 = time.perf_counter()
        seq = 0
        for i in range(0, len(records), batch):
            with env.begin(write=True, db=db) as txn, txn.cursor() as cur:
                for rec in records[i : i + batch]:
                    seq += 1
                    cur.put(prefix + _U64.pack(seq), rec, append=True)
        res["raw_append_batched_per_s"] = len(records) / (time.perf_counter() - t0)

        def scan() -> int:
            n = 0
            with env.begin(db=db) as txn, txn.cursor() as cur:
                cur.set_range(prefix)
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    n += 1
            return n

        def scan_decode_fold() -> State:
            state = State(ns=NS)
            with env.begin(db=db) as txn, txn.cursor() as cur:
                cur.set_range(prefix)
                fold((decode_record(v) for k, v in cur if k.startswith(prefix)), state)
            return state

        t, n = _best(scan, repeat)
        assert n == len(records)
        res["raw_scan_per_s"] = n / t
        t, state = _best(scan_decode_fold, repeat)
        res["raw_scan_decode_fold_per_s"] = len(records) / t
        res["raw_state_hash"] = state_hash(state)[:16]  # type: ignore[arg-type]
    finally:
        env.close()
    return res


def bench_parts(events: list[ev.Event], records: list[bytes], repeat: int) -> dict:
    """Where replay time goes, without LMDB: decode alone, fold alone."""
    t_enc, _ = _best(lambda: [encode_record(e) for e in events], repeat)
    t_dec, _ = _best(lambda: len([decode_record(r) for r in records]), repeat)
    t_fold, _ = _best(lambda: fold(events, State(ns=NS)), repeat)
    return {
        "encode_per_s": len(events) / t_enc,
        "decode_per_s": len(records) / t_dec,
        "fold_per_s": len(events) / t_fold,
    }


def bench_fsync(workdir: Path, n: int = 200) -> float:
    """p50 of a 4 KiB write + fsync on the same file system (ms)."""
    lat = []
    fd = os.open(workdir / "fsync.probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = os.urandom(4096)
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, block, (i % 16) * 4096)
            os.fsync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return statistics.median(lat) * 1e3


# -- main --------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    ap.add_argument("--events", type=int, default=200_000, help="events for batched append and replay (default 200000)")
    ap.add_argument("--single", type=int, default=2_000, help="single-event appends (default 2000)")
    ap.add_argument("--batch", type=int, default=1_000, help="events per batched append (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="replay runs; the fastest counts (default 3)")
    args = ap.parse_args(argv)

    t_gen = time.perf_counter()
    events = make_events(NS, args.events)
    single = make_events("bench/single", args.single, seed=2)
    records = [encode_record(e) for e in events]
    t_gen = time.perf_counter() - t_gen

    with tempfile.TemporaryDirectory(prefix="vmem-bench-", dir=os.environ.get("VMEM_BENCH_DIR")) as tmp:
        work = Path(tmp)
        res: dict = {"events": len(events), "batch": args.batch, "single_appends": len(single)}
        res["record_bytes_avg"] = sum(map(len, records)) / len(records)
        res["fsync_ms_p50"] = bench_fsync(work)
        res |= bench_parts(events, records, args.repeat)
        res |= anyio.run(bench_vmem, work, events, single, args.batch, args.repeat, backend="asyncio")
        del events, single
        res |= bench_raw(work, records, args.batch, args.repeat)
        res["store_mib"] = sum(f.stat().st_size for f in (work / "vmem").iterdir()) / 2**20

    assert res["state_hash"] == res["raw_state_hash"], "vmem and raw replay folded to different states"
    res["append_batched_ratio"] = res["append_batched_per_s"] / res["raw_append_batched_per_s"]
    res["replay_scan_ratio"] = res["replay_per_s"] / res["raw_scan_per_s"]
    res["replay_raw_fold_ratio"] = res["replay_per_s"] / res["raw_scan_decode_fold_per_s"]
    res["targets_met"] = all(res[k] >= v for k, v in TARGETS.items())

    rows = [
        ("events", res["events"], "events in the replayed namespace"),
        ("record_bytes_avg", res["record_bytes_avg"], "bytes per stored record"),
        ("fsync_ms_p50", res["fsync_ms_p50"], "4 KiB write + fsync, this file system"),
        ("append_single_per_s", res["append_single_per_s"], f"1 event per awaited append ({res['single_appends']})"),
        ("append_single_ms_p50", res["append_single_ms_p50"], "latency of one durable append"),
        ("append_single_ms_p99", res["append_single_ms_p99"], ""),
        ("append_batched_per_s", res["append_batched_per_s"], f"target >= {TARGETS['append_batched_per_s']:,}"),
        ("append_batch_ms_p50", res["append_batch_ms_p50"], f"one append of {args.batch} events"),
        ("raw_append_batched_per_s", res["raw_append_batched_per_s"], "raw LMDB puts of the same records"),
        ("append_batched_ratio", res["append_batched_ratio"], "vmem / raw"),
        ("read_decode_per_s", res["read_decode_per_s"], "read_all + decode, no fold"),
        ("replay_per_s", res["replay_per_s"], f"the log's fold path (vmem replay); target >= {TARGETS['replay_per_s']:,}"),
        ("replay_gc_off_per_s", res["replay_gc_off_per_s"], "the same replay with gc disabled (diagnostic)"),
        ("raw_scan_per_s", res["raw_scan_per_s"], "raw LMDB cursor scan, no decode"),
        ("replay_scan_ratio", res["replay_scan_ratio"], "vmem replay / raw scan"),
        ("raw_scan_decode_fold_per_s", res["raw_scan_decode_fold_per_s"], "raw scan + decode_record + fold"),
        ("replay_raw_fold_ratio", res["replay_raw_fold_ratio"], "vmem replay / raw scan+decode+fold"),
        ("encode_per_s", res["encode_per_s"], "encode_record alone"),
        ("decode_per_s", res["decode_per_s"], "decode_record alone"),
        ("fold_per_s", res["fold_per_s"], "fold alone (events in memory)"),
        ("store_mib", res["store_mib"], "size of the vmem LMDB files"),
    ]
    print(f"vmem log benchmark (LMDB, sync=True; events generated in {t_gen:.1f} s)")
    for name, value, note in rows:
        print(f"  {name:<28} {_fmt(float(value)):>12}  {note}")
    print(f"  targets {'met' if res['targets_met'] else 'MISSED'}")
    if args.json:
        sys.stdout.write(msgspec.json.encode(res).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
