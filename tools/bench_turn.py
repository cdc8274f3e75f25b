#!/usr/bin/env python3
"""One turn (retrieve, fuse, select, pack, trace) at 1,000, 10,000 and 100,000 stored blocks, and a cold `vmem ask`.

Builds a home per size with document pages of the sizes `vmem ingest` makes
(128 to 256 cl100k tokens each, exactly counted; sent to the memory actor as
ingest batches), then times the pager's turn request over the in-process bus
(everything but the model): the turn's start with the user's message, the
query's embedding with the embedder `Vmem.open` picks (or --embedder), the
implicit fault (retrieval over BM25, vectors, recency and graph, fusion,
selection, page events appended durably, compression of what was evicted)
and packing (render, exact count, trace appended).  Baseline, in the same
process: a bare BM25 top-50 over the same index plus an exact token count of
its texts (the least any pager must do).

Cold start: the wall time of whole `vmem ask` processes on the first size's
home (interpreter start, imports, opening the home, the turn with the
offline model and its page faults, exit), fastest and median of three.

    tools/bench_turn.py [--sizes 1000,10000,100000] [--turns 200] [--embedder default|hashing|minilm] [--json]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dir_mb, emit_json, rss_mb, summary_ms  # noqa: E402

from vmem import Vmem  # noqa: E402
from vmem.assembly.tokens import get_tokenizer  # noqa: E402
from vmem.retrieval.choice import default_embedder, make_embedder  # noqa: E402
from vmem.schemas.messages import (  # noqa: E402
    IngestReply,
    IngestRequest,
    PackReply,
    PageIn,
    TurnBegin,
    TurnRequest,
)

NS = "bench/turn"
BUDGET = 2048
VOCAB_SIZE = 5000


def vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ter", "an", "dus", "vel", "po", "ri", "sen", "qua", "bo", "nix", "ar", "el"]
    words = set()
    while len(words) < VOCAB_SIZE:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def sentence(rng: random.Random, vocab: list[str]) -> str:
    # Zipf-like: low ranks are frequent, like real text.
    n = rng.randint(12, 30)
    return " ".join(vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] for _ in range(n)) + "."


def page(rng: random.Random, vocab: list[str], tok, low: int, high: int) -> str:
    """Sentences up to a random size in [low, high] tokens: what `vmem ingest` splits a document into."""
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while True:
        s = sentence(rng, vocab)
        n = tok.count(s) + 1
        if parts and size + n > target:
            return " ".join(parts)
        parts.append(s)
        size += n


async def build(home: Path, n: int, rng: random.Random, vocab: list[str], embedder: object, sizes: tuple[int, int]) -> None:
    """`n` pages of one document, sent as ingest batches (the last one indexes them)."""
    tok = get_tokenizer("cl100k_base")
    async with Vmem.open(home, create=True, embedder=embedder) as vm:
        batch = 1000
        for b, first in enumerate(range(0, n, batch)):
            pages = tuple(PageIn(page(rng, vocab, tok, *sizes)) for _ in range(first, min(n, first + batch)))
            last = first + len(pages) >= n
            req = IngestRequest(ns=NS, doc_id=f"{n:016x}", source="bench", batch=b, first_page=first + 1, pages=pages,
                                final=last, total_pages=n if last else 0)
            await vm._call(NS, "memory", "ingest", req, IngestReply, timeout=3600)


async def measure(home: Path, turns: int, rng: random.Random, vocab: list[str], embedder: object) -> dict:
    tok = get_tokenizer("cl100k_base")
    async with Vmem.open(home, embedder=embedder) as vm:
        await vm.state(NS)
        queries = [" ".join(rng.choice(vocab[:800]) for _ in range(rng.randint(3, 8))) for _ in range(turns + 10)]
        times: list[float] = []
        for t, q in enumerate(queries, start=1):
            start = time.perf_counter()
            await vm._call(NS, "pager", "turn", TurnRequest(ns=NS, budget=BUDGET, query=q, begin=TurnBegin(message=q)), PackReply)
            if t > 10:  # warm-up turns are not counted
                times.append(time.perf_counter() - start)
        # Baseline: bare BM25 top-50 and an exact count of what it returns.
        from vmem.actors.retriever import INDEX_FORMAT
        from vmem.retrieval.bm25 import Bm25Index

        assert vm._home is not None
        index = Bm25Index.open(vm._home.index_dir(NS) / f"bm25-{INDEX_FORMAT}")
        if index.doc_count == 0:  # the retriever's own index, or the baseline would measure nothing
            raise SystemExit("bench_turn: the baseline's BM25 index is empty; is it the retriever's own directory?")
        base: list[float] = []
        for q in queries[10:]:
            start = time.perf_counter()
            hits = index.search(q, 50)
            texts = vm._home.store.get_many(NS, [b for b, _s in hits])
            tok.count("\n\n".join(texts[b].text for b, _s in hits if b in texts))
            base.append(time.perf_counter() - start)
        index.close()
        return {"turn": summary_ms(times), "baseline": summary_ms(base), "rss_mb": rss_mb()}


def cold_start(home: Path, embedder: str, runs: int = 3) -> dict[str, float]:
    """Whole `vmem ask` processes on `home`: seconds, fastest and median."""
    cli = [sys.executable, "-c", "import sys; from vmem.cli import main; sys.exit(main())"]
    args = ["ask", "--home", str(home), "--ns", NS, "--budget", str(BUDGET), "kalo miter anpo tervel"]
    if embedder != "default":
        args += ["--embedder", embedder]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cli + args, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"bench_turn: vmem ask failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}


async def main_async(args: argparse.Namespace) -> dict:
    embedder = None if args.embedder == "default" else make_embedder(args.embedder)
    used = embedder if embedder is not None else default_embedder()
    out: dict = {"budget": BUDGET, "turns": args.turns, "embedder": used.id, "page_tokens": list(args.page_tokens),
                 "blocks": {}}
    if not args.json:
        print(f"embedder {used.id}; pages of {args.page_tokens[0]}-{args.page_tokens[1]} tokens; budget {BUDGET}", flush=True)
    for n in args.sizes:
        rng = random.Random(n)
        vocab = vocabulary(rng)
        with tempfile.TemporaryDirectory(prefix=f"vmem-bench-turn-{n}-") as tmp:
            home = Path(tmp) / "home"
            t0 = time.perf_counter()
            await build(home, n, rng, vocab, embedder, args.page_tokens)
            built = time.perf_counter() - t0
            m = await measure(home, args.turns, rng, vocab, embedder)
            if "cold_start" not in out and not args.no_cold_start:
                out["cold_start"] = {"blocks": n, **cold_start(home, args.embedder)}
            row = {
                "p50_ms": m["turn"]["p50_ms"],
                "p99_ms": m["turn"]["p99_ms"],
                "rss_mb": m["rss_mb"],
                "store_mb": dir_mb(home),
                "baseline_p50_ms": m["baseline"]["p50_ms"],
                "ratio_p50_vs_baseline": round(m["turn"]["p50_ms"] / max(m["baseline"]["p50_ms"], 1e-6), 1),
                "build_s": round(built, 1),
            }
            out["blocks"][str(n)] = row
            if not args.json:
                print(f"{n:>7} blocks: turn p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms "
                      f"(bare BM25 top-50 + count: {row['baseline_p50_ms']:.2f} ms, x{row['ratio_p50_vs_baseline']}); "
                      f"rss {row['rss_mb']} MiB, store {row['store_mb']} MiB, built in {row['build_s']} s", flush=True)
    if "cold_start" in out and not args.json:
        c = out["cold_start"]
        print(f"cold `vmem ask` at {c['blocks']} blocks: {c['min_s']:.2f} s fastest, {c['median_s']:.2f} s median of 3", flush=True)
    sizes = [str(n) for n in args.sizes]
    if len(sizes) >= 2:
        a, b = out["blocks"][sizes[-2]], out["blocks"][sizes[-1]]
        out["growth_p50"] = round(b["p50_ms"] / max(a["p50_ms"], 1e-6), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--turns", type=int, default=200)
    p.add_argument("--page-tokens", default=(128, 256), type=lambda s: tuple(int(x) for x in s.split(",")),
                   metavar="LOW,HIGH", help="page sizes in tokens (default 128,256: what `vmem ingest` makes)")
    p.add_argument("--embedder", choices=("default", "hashing", "minilm"), default="default",
                   help="the embedder (default: the one Vmem.open picks)")
    p.add_argument("--no-cold-start", action="store_true", help="skip timing whole `vmem ask` processes")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args()
    emit_json(anyio.run(main_async, args)) if args.json else print(anyio.run(main_async, args))


if __name__ == "__main__":
    main()
