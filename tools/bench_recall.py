#!/usr/bin/env python3
"""Evidence recall of vmem's page selection against single-retriever baselines, by budget.

Data: LoCoMo's JSON format (a list of samples, each with `conversation` holding
`session_N` lists of turns `{speaker, dia_id, text}` and `session_N_date_time`,
and `qa` items `{question, answer, evidence: [dia_id...], category}`).

Each conversation's turns become message blocks in a fresh namespace (one
per conversation), chained by `follows` edges within a session, and indexed
(BM25, vectors).  For each question and budget, the pager selects what would
be resident for that question from a cold page table, filling a Retrieved
section of exactly `budget` tokens (counted with cl100k, each turn rendered
as it would be in a prompt).  A question's recall is the share of its
evidence turns that were selected; the figure is the mean over questions
whose evidence exists in the conversation.  Evidence ids not found in the
conversation are counted in `dropped_evidence` and left out.

Baselines fill the same budget, through the same selection code, in the same
run, from one retriever each: `recency` (newest turns first), `bm25`
(tantivy), `vector` (the same embedder's nearest neighbours).  vmem fuses
BM25, vectors, graph neighbours and recency.

    tools/bench_recall.py [--data FILE] [--budgets 512,1024,2048,4096] [--embedder hashing|minilm] [--json] [--svg OUT.svg]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json  # noqa: E402

from vmem import Vmem  # noqa: E402
from vmem.actors.retriever import RetrieverActor  # noqa: E402
from vmem.assembly.budget import SectionSpec  # noqa: E402
from vmem.assembly.pack import PackInput  # noqa: E402
from vmem.assembly.tokens import get_tokenizer  # noqa: E402
from vmem.paging.select import select_resident  # noqa: E402
from vmem.schemas.messages import (  # noqa: E402
    Candidate,
    IngestReply,
    IngestRequest,
    PageIn,
    SearchRequest,
    SyncRequest,
)

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "bench-data" / "locomo-dev.json"
BUDGETS = (512, 1024, 2048, 4096)
SEARCH_LIMIT = 400
# Only the Retrieved section: the budget is memory context, nothing else.
TABLE = (SectionSpec("Retrieved", 0, 1.0),)
CONFIGS = {
    "vmem": frozenset({"bm25", "vector", "graph", "recency"}),
    "recency": frozenset({"recency"}),
    "bm25": frozenset({"bm25"}),
    "vector": frozenset({"vector"}),
}


def turns_of(conversation: dict) -> list[tuple[int, str, list[dict]]]:
    sessions = []
    for key, value in conversation.items():
        m = re.fullmatch(r"session_(\d+)", key)
        if m and isinstance(value, list):
            sessions.append((int(m.group(1)), conversation.get(f"{key}_date_time", ""), value))
    return sorted(sessions, key=lambda s: s[0])


def make_embedder(name: str):
    if name == "minilm":
        from vmem.retrieval.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    from vmem.retrieval.embed import HashingEmbedder

    return HashingEmbedder()


async def run_sample(sample: dict, idx: int, budgets: list[int], embedder, tmp: Path) -> dict:
    ns = f"bench/conv{idx}"
    tok = get_tokenizer("cl100k_base")
    out = {name: {b: [] for b in budgets} for name in CONFIGS}
    per_cat: dict[str, dict[str, list[float]]] = {}
    dropped = 0
    questions = 0
    async with Vmem.open(tmp / f"home{idx}", create=True, embedder=embedder) as vm:
        pages: list[PageIn] = []
        dia_ids: list[str] = []
        for _s, when, turns in turns_of(sample["conversation"]):
            for t in turns:
                text = f"[{when}] {t.get('speaker', '')}: {t.get('text', '')}"
                if t.get("blip_caption"):
                    text += f" [image: {t['blip_caption']}]"
                pages.append(PageIn(text))
                dia_ids.append(t["dia_id"])
        # The turns go in as one document, a page each, through the memory actor (as any client's would).
        for b, first in enumerate(range(0, len(pages), 1000)):
            batch = tuple(pages[first:first + 1000])
            last = first + len(batch) >= len(pages)
            await vm._call(ns, "memory", "ingest", IngestRequest(
                ns=ns, doc_id=f"{idx:016x}", source=sample.get("sample_id", "conv"), batch=b, first_page=first + 1,
                pages=batch, final=last, total_pages=len(pages) if last else 0), IngestReply, timeout=600)
        view = vm._home.view(ns)
        await view.catch_up()
        page_ids = [b for b in view.state.order if view.state.blocks[b].kind == "page"]
        dia_to_block = dict(zip(dia_ids, page_ids))
        actors = {name: RetrieverActor(vm._home, embedder=embedder, builtins=builtins) for name, builtins in CONFIGS.items()}
        await actors["vmem"].sync(SyncRequest(ns=ns))
        state = view.state
        ids = list(state.blocks)
        blocks = vm._home.store.get_many(ns, ids)
        block_tokens = vm._home.store.token_counts(ns, ids, tok)
        for qa in sample["qa"]:
            evidence = [e.strip() for e in qa.get("evidence", []) if isinstance(e, str)]
            found = [dia_to_block[e] for e in evidence if e in dia_to_block]
            dropped += len(evidence) - len(found)
            if not found:
                continue
            questions += 1
            cat = str(qa.get("category", "?"))
            for name, actor in actors.items():
                reply = await actor.search(SearchRequest(ns=ns, query=str(qa["question"]), limit=SEARCH_LIMIT))
                cands = list(reply.candidates)
                if name == "recency":  # newest first, whatever the question
                    cands = [Candidate(b, (len(state.order) - i) / len(state.order), {"recency": 1.0})
                             for i, b in enumerate(reversed(state.order))][:SEARCH_LIMIT]
                for budget in budgets:
                    inp = PackInput(state=state, blocks=blocks, block_tokens=block_tokens, turn=1, attempt=0, budget=budget)
                    keep = set(select_resident(inp, cands, tok.count, table=TABLE).keep)
                    r = sum(1 for b in found if b in keep) / len(found)
                    out[name][budget].append(r)
                    per_cat.setdefault(cat, {}).setdefault(f"{name}@{budget}", []).append(r)
    return {"recall": out, "per_category": per_cat, "questions": questions, "dropped": dropped}


def mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def svg_chart(recall: dict[str, dict[str, float]], budgets: list[int], title: str = "Evidence recall by prompt budget") -> str:
    """Recall against budget, one line per method: a small dependency-free SVG."""
    w, h, pad = 560, 340, 50
    colours = {"vmem": "#d62728", "bm25": "#1f77b4", "vector": "#2ca02c", "recency": "#7f7f7f"}
    xs = {b: pad + i * (w - 2 * pad) / max(1, len(budgets) - 1) for i, b in enumerate(budgets)}

    def y(v: float) -> float:
        return h - pad - v * (h - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{pad}" x2="{w - pad}" y1="{y(v)}" y2="{y(v)}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad - 8}" y="{y(v) + 4}" text-anchor="end">{v:.2f}</text>')
    for b, x in xs.items():
        parts.append(f'<text x="{x}" y="{h - pad + 18}" text-anchor="middle">{b}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">budget (tokens)</text>')
    for i, (name, by_budget) in enumerate(recall.items()):
        pts = " ".join(f"{xs[b]},{y(by_budget[str(b)])}" for b in budgets)
        c = colours.get(name, "#9467bd")
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="{3 if name == "vmem" else 2}"/>')
        for b in budgets:
            parts.append(f'<circle cx="{xs[b]}" cy="{y(by_budget[str(b)])}" r="3" fill="{c}"/>')
        # Legend, bottom right of the plot area (lines rise to the top right).
        ly = h - pad - 16 * (len(recall) - i)
        parts.append(f'<line x1="{w - pad - 110}" x2="{w - pad - 90}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" stroke-width="3"/>')
        parts.append(f'<text x="{w - pad - 84}" y="{ly}" fill="#222">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


async def main_async(args: argparse.Namespace) -> dict:
    data_path = Path(args.data)
    if not data_path.is_file():
        raise SystemExit(f"bench_recall: no data file at {data_path}; pass --data FILE in LoCoMo's format "
                         f"(tools/make_synthetic_locomo.py writes a small synthetic one)")
    data = json.loads(data_path.read_text(encoding="utf-8"))
    budgets = args.budgets
    embedder = make_embedder(args.embedder)
    totals = {name: {b: [] for b in budgets} for name in CONFIGS}
    per_cat: dict[str, dict[str, list[float]]] = {}
    questions = dropped = 0
    timings = []
    with tempfile.TemporaryDirectory(prefix="vmem-bench-recall-") as tmp:
        for i, sample in enumerate(data):
            t0 = time.perf_counter()
            r = await run_sample(sample, i, budgets, embedder, Path(tmp))
            timings.append(round(time.perf_counter() - t0, 2))
            for name in CONFIGS:
                for b in budgets:
                    totals[name][b] += r["recall"][name][b]
            for cat, d in r["per_category"].items():
                for k, v in d.items():
                    per_cat.setdefault(cat, {}).setdefault(k, []).extend(v)
            questions += r["questions"]
            dropped += r["dropped"]
            if not args.json:
                print(f"conversation {i}: {r['questions']} questions in {timings[-1]} s", flush=True)
    recall = {name: {str(b): mean(totals[name][b]) for b in budgets} for name in CONFIGS}
    result = {
        "recall": recall,
        "per_category": {cat: {k: mean(v) for k, v in sorted(d.items())} for cat, d in sorted(per_cat.items())},
        "questions": questions,
        "dropped_evidence": dropped,
        "embedder": embedder.id,
        "data": str(data_path),
        "seconds_per_conversation": timings,
    }
    if args.svg:
        title = f"Evidence recall by budget ({data_path.name}, {embedder.id})"
        Path(args.svg).write_text(svg_chart(recall, budgets, title), encoding="utf-8")
    if not args.json:
        print(f"{'':>8} " + " ".join(f"{b:>7}" for b in budgets))
        for name, by_b in recall.items():
            print(f"{name:>8} " + " ".join(f"{by_b[str(b)]:>7.3f}" for b in budgets))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"LoCoMo-format JSON (default {DEFAULT_DATA})")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing")
    p.add_argument("--svg", help="also write a chart of recall against budget")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args()
    result = anyio.run(main_async, args)
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
