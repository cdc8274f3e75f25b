#!/usr/bin/env python3
"""Evidence recall by prompt budget on LoCoMo: vmem's first-attempt prompt against single retrievers.

The measure is the one `../shared/bench-data/README.md` defines:

- Questions of category 1-4 only.  Every turn of a conversation is one block
  whose text is exactly ``[<session date>] <speaker>: <text>`` (plus
  `` [image: <blip_caption>]`` when the turn shared an image); sessions are
  taken in the order of N (``session_N``), not key order.
- Evidence ids are split on ``;`` and whitespace and read as
  ``D<session>:<turn>`` (an optional colon after ``D``, leading zeros on the
  turn: ``D:11:26``, ``D30:05``); ids naming no turn are dropped, and a
  question left with no evidence is dropped (both counts are reported).
- Budget B in cl100k_base tokens; the question's own tokens count against B.
  A question's recall is the fraction of its evidence turns whose rendered
  text appears in the context; Recall@B is the mean over questions.

**vmem** is measured on what ``vmem ask`` pages in on the first attempt of a
turn, through the pager's own code path and candidate limit: each question
is the first turn of a fresh agent on the post-ingest state (the start
events ``Vmem.ask`` appends: the pinned system block, the question as a user
message, ``TurnStarted``), then the retriever actor's search (BM25, vectors,
recency, graph neighbours, fused) with the request the pager builds, then the
pager's decision (``decide_fault`` -> ``select_resident``) folded into the
state, then the packer's ``pack_state``; the evidence texts are looked up in
that exact packed prompt string, which holds vmem's fixed sections and the
question as the user message and is never over B.  Each question runs in its
own namespace holding the conversation (the turns are ``page`` blocks of one
document, chained by ``follows`` edges within a session, indexed by the
retriever's ``sync`` as ``vmem ingest`` does), so no question sees another's
blocks; budgets are decided from copies of that one state.  A page is shown
as ``[<12 hex digits of its id>]`` and its text: the citation handle costs
vmem about 9 tokens a turn that the baselines do not pay.  (tests/test_tools.py
checks that this prompt is byte for byte the first one ``Vmem.ask`` packs.)

**Baselines** rank the turns by one signal and fill B minus the question's
tokens with whole turns in that order (a turn costs its tokens plus one for
the newline that joins it to the next; a turn that does not fit is skipped):
``recency`` (newest first), ``bm25`` (Okapi BM25, k1 1.2, b 0.75, Lucene idf,
over the rendered turn text, analysed as tantivy's ``default`` analyser:
words, lowercased, no stemming, each query term once), ``vector`` (cosine to
the question with the embedder vmem uses in the same run).  ``baselines_extra``
adds ``bm25_vmem``: the same fill in the order of vmem's own BM25
(``vmem.retrieval.bm25.bm25_rank``: its analysers, English stemming), i.e. vmem's BM25
retriever alone.

Calibration: the README gives an independent reference for the bm25 and
recency baselines (231 questions); the run prints reference, measured, delta
and whether it is within +-0.015 at every budget.

    tools/bench_recall.py [--data FILE] [--budgets 512,1024,2048,4096]
                          [--embedder default|hashing|minilm] [--json] [--svg OUT.svg]
                          [--per-question OUT.jsonl]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio
import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json  # noqa: E402

from vmem.actors.retriever import RetrieverActor  # noqa: E402
from vmem.assembly.pack import pack_state  # noqa: E402
from vmem.assembly.tokens import get_tokenizer  # noqa: E402
from vmem.paging.decisions import begin_turn, decide_fault, search_request  # noqa: E402
from vmem.retrieval.bm25 import bm25_rank  # noqa: E402
from vmem.schemas.events import DocumentIngested, EdgeAdded  # noqa: E402
from vmem.schemas.messages import SearchReply, SyncRequest, TurnBegin  # noqa: E402
from vmem.state.blocks import make_block  # noqa: E402
from vmem.state.fold import State, decode_snapshot, encode_snapshot, fold  # noqa: E402
from vmem.storage.home import Home  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "bench-data" / "locomo-dev.json"
BUDGETS = (512, 1024, 2048, 4096)
CATEGORIES = (1, 2, 3, 4)
METHODS = ("vmem", "recency", "bm25", "vector")
EXTRA = ("bm25_vmem",)
TOKENIZER = "cl100k_base"
MODEL_NAME = "offline"  # what `vmem ask --model offline` records in TurnStarted
# The independent reference of ../shared/bench-data/README.md (locomo-dev, 231 questions).
REFERENCE = {
    "bm25": {512: 0.528, 1024: 0.613, 2048: 0.670, 4096: 0.738},
    "recency": {512: 0.009, 1024: 0.028, 2048: 0.097, 4096: 0.205},
}
REFERENCE_QUESTIONS = 231
TOLERANCE = 0.015
BM25_K1, BM25_B = 1.2, 0.75
_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")


# -- the data ------------------------------------------------------------------


def render_turn(date: str, turn: dict) -> str:
    """A turn's text as the measure defines it (the block text, and what is looked up)."""
    text = f"[{date}] {turn.get('speaker', '')}: {turn.get('text', '')}"
    if turn.get("blip_caption"):
        text += f" [image: {turn['blip_caption']}]"
    return text


def sessions_of(conversation: dict) -> list[tuple[int, str, list[dict]]]:
    """(N, date, turns) of each session, ordered by N (not by key order)."""
    out = []
    for key, value in conversation.items():
        m = re.fullmatch(r"session_(\d+)", key)
        if m and isinstance(value, list):
            out.append((int(m.group(1)), str(conversation.get(f"{key}_date_time", "")), value))
    return sorted(out, key=lambda s: s[0])


def turn_key(dia_id: str) -> tuple[int, int] | None:
    """(session, turn) of an evidence or dialogue id, or None if it is not ``D<s>:<t>``."""
    m = _EVIDENCE.fullmatch(dia_id.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def evidence_keys(evidence: object) -> tuple[list[tuple[int, int]], int]:
    """The well-formed ids of a question's evidence list (split on ';' and whitespace), and how many parts were not."""
    out: list[tuple[int, int]] = []
    bad = 0
    for item in evidence if isinstance(evidence, list) else []:
        for part in re.split(r"[;\s]+", str(item)):
            if not part:
                continue
            key = turn_key(part)
            if key is None:
                bad += 1
            elif key not in out:
                out.append(key)
    return out, bad


class Conversation:
    """One sample: its turns (rendered, in session order) and its questions of category 1-4."""

    def __init__(self, sample: dict, idx: int) -> None:
        self.sample_id = str(sample.get("sample_id", f"conv{idx}"))
        self.turns: list[str] = []  # rendered text, in order
        self.session_of: list[int] = []
        by_key: dict[tuple[int, int], int] = {}
        for n, date, turns in sessions_of(sample.get("conversation", {})):
            for t in turns:
                key = turn_key(str(t.get("dia_id", "")))
                if key is not None and key not in by_key:
                    by_key[key] = len(self.turns)
                self.turns.append(render_turn(date, t))
                self.session_of.append(n)
        self.questions: list[tuple[str, int, list[int]]] = []  # (question, category, evidence turn indexes)
        self.dropped_questions = 0
        self.dropped_evidence = 0
        for qa in sample.get("qa", []):
            try:
                cat = int(qa.get("category", 0))
            except (TypeError, ValueError):
                continue
            if cat not in CATEGORIES:
                continue
            keys, malformed = evidence_keys(qa.get("evidence"))
            found = [by_key[k] for k in keys if k in by_key]
            self.dropped_evidence += malformed + len(keys) - len(found)
            if not found:
                self.dropped_questions += 1
                continue
            self.questions.append((str(qa.get("question", "")).strip(), cat, sorted(set(found))))


# -- baselines -------------------------------------------------------------------


@functools.cache
def _default_analyzer():
    # tantivy's registered "default" analyser: SimpleTokenizer, remove_long(40), lowercase.
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .build()
    )


def default_terms(text: str) -> list[str]:
    return _default_analyzer().analyze(text)


class Bm25:
    """Okapi BM25 over a fixed list of texts (Lucene idf); ranks every text, ties by position."""

    def __init__(self, texts: list[str], analyse) -> None:
        self.analyse = analyse
        self.tf = [Counter(analyse(t)) for t in texts]
        self.length = [sum(c.values()) for c in self.tf]
        n = len(texts)
        self.avg = sum(self.length) / max(1, n)
        df = Counter(term for c in self.tf for term in c)
        self.idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    def rank(self, query: str) -> list[int]:
        qterms = set(self.analyse(query))
        scores = []
        for i, c in enumerate(self.tf):
            s = 0.0
            for t in qterms:
                f = c.get(t)
                if f:
                    norm = BM25_K1 * (1 - BM25_B + BM25_B * self.length[i] / self.avg)
                    s += self.idf[t] * f * (BM25_K1 + 1) / (f + norm)
            scores.append((-s, i))
        return [i for _s, i in sorted(scores)]


def vmem_bm25_order(question: str, docs: list[tuple[str, str]]) -> list[int]:
    """Turns in the order of vmem's own BM25 (its analysers, `bm25_rank`); turns it does not match last, in order."""
    hits = [int(b) for b, _s in bm25_rank(question, docs, len(docs))]
    seen = set(hits)
    return hits + [i for i in range(len(docs)) if i not in seen]


def fill_baseline(order: list[int], costs: list[int], room: int) -> set[int]:
    """Whole turns in ranking order while they fit `room` tokens (a turn that does not fit is skipped)."""
    used = 0
    chosen: set[int] = set()
    for i in order:
        if used + costs[i] <= room:
            used += costs[i]
            chosen.add(i)
    return chosen


# -- vmem ------------------------------------------------------------------------


def memoised(embedder):
    """The same embedder, remembering vectors by text (each question's namespace re-indexes the same turns).

    The instance keeps its class, so the retriever's choice of fusion policy is unchanged.
    """
    inner = embedder.embed
    memo: dict[str, np.ndarray] = {}
    stats = {"texts": 0, "seconds": 0.0}

    async def embed(texts):
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            t0 = time.perf_counter()
            for t, v in zip(todo, await inner(todo)):
                memo[t] = v
            stats["seconds"] += time.perf_counter() - t0
            stats["texts"] += len(todo)
        if not texts:
            return await inner([])
        return np.stack([memo[t] for t in texts])

    embedder.embed = embed
    return embedder, stats


def make_embedder(name: str):
    if name == "minilm":
        from vmem.retrieval.minilm import MiniLMEmbedder

        return MiniLMEmbedder()
    if name == "hashing":
        from vmem.retrieval.embed import HashingEmbedder

        return HashingEmbedder()
    return None  # vmem's default: whatever the retriever actor picks


def ingest_events(ns: str, conv: Conversation) -> tuple[list, list[str]]:
    """The conversation as one document of `page` blocks (one per turn), chained within a session."""
    doc = f"locomo-{conv.sample_id}"
    events: list = []
    ids: list[str] = []
    prev = ""
    prev_session = None
    for i, text in enumerate(conv.turns):
        b = make_block(ns, "page", "document", text, {"doc": doc, "session": str(conv.session_of[i])})
        events.append(b)
        ids.append(b.block_id)
        if prev and prev_session == conv.session_of[i]:
            events.append(EdgeAdded(ns=ns, src=b.block_id, dst=prev, kind="follows"))
        prev, prev_session = b.block_id, conv.session_of[i]
    events.append(DocumentIngested(ns=ns, doc_id=doc, source=conv.sample_id, pages=len(ids),
                                   first=ids[0] if ids else "", last=prev, bytes=sum(len(t.encode()) for t in conv.turns)))
    return events, ids


def start_events(ns: str, question: str, budget: int) -> list:
    """What `Vmem.ask` appends to start a fresh agent's first turn (the pager's own begin_turn)."""
    _turn, events = begin_turn(State(ns=ns), ns, TurnBegin(message=question, model=MODEL_NAME, mode="ask"), budget=budget)
    return events


async def vmem_contexts(home: Home, retriever: RetrieverActor, ns: str, question: str, budgets: list[int]):
    """The packed prompt of the first attempt of a fresh agent's first turn, per budget."""
    view = home.view(ns)
    await home.log.append(ns, start_events(ns, question, max(budgets)))
    await view.catch_up()
    state = view.state
    frozen = encode_snapshot(state)
    replies: dict[bytes, SearchReply] = {}
    out = {}
    for budget in budgets:
        # The pager's own request for this budget (Pager._search); equal requests share one search.
        req = search_request(state, ns, question, budget)
        key = msgspec.msgpack.encode(req)
        if key not in replies:
            replies[key] = await retriever.search(req) if question.strip() else SearchReply(candidates=())
        found = replies[key]
        events, sel = decide_fault(
            home.store, ns, state, fault_id="t1p", turn=1, attempt=0, budget=budget, tokenizer=TOKENIZER,
            candidates=found.candidates, explicit=(), policy="score", query=question, source_kind="pager", raise_event=True,
        )
        if not (sel.load or sel.evict):
            events = []  # the pager records no fault when there is nothing to page in
        after = fold(events, decode_snapshot(frozen))
        out[budget] = (pack_state(home.store, ns, after, turn=1, attempt=0, budget=budget, tokenizer=TOKENIZER), found)
    return out


# -- the run ---------------------------------------------------------------------


def mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


async def run_conversation(conv: Conversation, idx: int, budgets: list[int], embedder_name: str, tmp: Path, log) -> dict:
    tok = get_tokenizer(TOKENIZER)
    methods = METHODS + EXTRA
    scores = {m: {b: [] for b in budgets} for m in methods}
    by_cat = {m: {c: {b: [] for b in budgets} for c in CATEGORIES} for m in methods}
    prompt_tokens = {b: [] for b in budgets}
    per_question: list[dict] = []
    t_start = time.perf_counter()
    home = Home.init(tmp / f"home{idx}")
    try:
        retriever = RetrieverActor(home, embedder=make_embedder(embedder_name))
        embedder, embed_stats = memoised(retriever.embedder)
        texts = conv.turns
        costs = [tok.count(t) + 1 for t in texts]  # + the newline joining it to the next turn
        # Baselines: one ranking each.
        bm25 = Bm25(texts, default_terms)
        docs = [(str(i), t) for i, t in enumerate(texts)]
        turn_vecs = await embedder.embed(texts)
        t_ingest = time.perf_counter()
        query_seconds = []
        for qi, (question, cat, evidence) in enumerate(conv.questions):
            room_q = tok.count(question)
            t0 = time.perf_counter()
            qv = (await embedder.embed([question]))[0]
            query_seconds.append(time.perf_counter() - t0)
            orders = {
                "recency": list(range(len(texts)))[::-1],
                "bm25": bm25.rank(question),
                "bm25_vmem": vmem_bm25_order(question, docs),
                "vector": [i for _s, i in sorted(zip((-(turn_vecs @ qv)).tolist(), range(len(texts))))],
            }
            # vmem: this question's own namespace holding the conversation, indexed as after an ingest.
            ns = f"bench/c{idx}q{qi}"
            events, _ids = ingest_events(ns, conv)
            await home.log.append(ns, events)
            await retriever.sync(SyncRequest(ns=ns))
            packed = await vmem_contexts(home, retriever, ns, question, budgets)
            row: dict = {"sample_id": conv.sample_id, "question": question, "category": cat, "recall": {}}
            for b in budgets:
                for name, order in orders.items():
                    chosen = fill_baseline(order, costs, b - room_q)
                    r = sum(1 for e in evidence if e in chosen) / len(evidence)
                    scores[name][b].append(r)
                    by_cat[name][cat][b].append(r)
                    row["recall"].setdefault(name, {})[str(b)] = r
                p, _found = packed[b]
                if p.tokens > b:
                    raise SystemExit(f"bench_recall: vmem packed {p.tokens} tokens into a budget of {b}")
                prompt_tokens[b].append(p.tokens)
                r = sum(1 for e in evidence if texts[e] in p.prompt) / len(evidence)
                scores["vmem"][b].append(r)
                by_cat["vmem"][cat][b].append(r)
                row["recall"].setdefault("vmem", {})[str(b)] = r
            per_question.append(row)
        seconds = time.perf_counter() - t_start
        timing = {
            "sample_id": conv.sample_id,
            "turns": len(texts),
            "questions": len(conv.questions),
            "seconds": round(seconds, 2),
            "setup_seconds": round(t_ingest - t_start, 2),
            "embed_seconds": round(embed_stats["seconds"], 2),
            "embedded_texts": embed_stats["texts"],
            "query_embed_ms_p50": round(1000 * statistics.median(query_seconds), 2) if query_seconds else 0.0,
        }
        log(f"{conv.sample_id}: {len(texts)} turns, {len(conv.questions)} questions in {timing['seconds']} s "
            f"(embedding {timing['embed_seconds']} s)")
        return {"scores": scores, "by_cat": by_cat, "prompt_tokens": prompt_tokens, "timing": timing,
                "embedder": retriever.embedder.id, "per_question": per_question}
    finally:
        await home.aclose()


def calibration(recall: dict, budgets: list[int], questions: int) -> dict:
    out: dict = {"questions": {"reference": REFERENCE_QUESTIONS, "measured": questions,
                               "within": questions == REFERENCE_QUESTIONS}, "tolerance": TOLERANCE}
    ok = questions == REFERENCE_QUESTIONS
    for method, ref in REFERENCE.items():
        out[method] = {}
        for b in budgets:
            if b not in ref:
                continue
            got = recall[method][str(b)]
            delta = round(got - ref[b], 4)
            within = abs(delta) <= TOLERANCE + 1e-9
            ok = ok and within
            out[method][str(b)] = {"reference": ref[b], "measured": got, "delta": delta, "within": within}
    out["within_tolerance"] = ok
    return out


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
        ly = h - pad - 16 * (len(recall) - i)
        parts.append(f'<line x1="{w - pad - 110}" x2="{w - pad - 90}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" stroke-width="3"/>')
        parts.append(f'<text x="{w - pad - 84}" y="{ly}" fill="#222">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def print_report(result: dict, budgets: list[int]) -> None:
    head = f"{'':>10} " + " ".join(f"{b:>7}" for b in budgets)
    print(f"\nRecall@B ({result['questions']} questions, embedder {result['embedder']}, "
          f"vmem candidates {result['search_limit']})")
    print(head)
    for name, by_b in {**result["recall"], **result["baselines_extra"]}.items():
        print(f"{name:>10} " + " ".join(f"{by_b[str(b)]:>7.3f}" for b in budgets))
    print("\nby category")
    for cat in CATEGORIES:
        n = result["questions_by_category"].get(str(cat), 0)
        print(f"category {cat} ({n} questions)")
        for name in (*METHODS, *EXTRA):
            by_b = result["by_category"][name].get(str(cat), {})
            if by_b:
                print(f"{name:>10} " + " ".join(f"{by_b[str(b)]:>7.3f}" for b in budgets))
    cal = result["calibration"]
    print(f"\ncalibration against the README's reference (tolerance +-{TOLERANCE}): "
          f"{'within' if cal['within_tolerance'] else 'NOT within'}")
    q = cal["questions"]
    print(f"  questions  reference {q['reference']}  measured {q['measured']}  {'yes' if q['within'] else 'NO'}")
    print(f"  {'method':<8} {'budget':>6} {'reference':>9} {'measured':>9} {'delta':>7}  within")
    for method in REFERENCE:
        for b, row in cal[method].items():
            print(f"  {method:<8} {b:>6} {row['reference']:>9.3f} {row['measured']:>9.3f} {row['delta']:>+7.3f}  "
                  f"{'yes' if row['within'] else 'NO'}")
    print(f"\ndropped: {result['dropped']['questions']} questions with no evidence left, "
          f"{result['dropped']['evidence_ids']} evidence ids naming no turn")
    print("vmem prompt tokens (max): " + ", ".join(f"{b}: {result['vmem_prompt_tokens'][str(b)]['max']}" for b in budgets))
    for t in result["conversations"]:
        print(f"{t['sample_id']}: {t['seconds']} s ({t['questions']} questions; embedding {t['embed_seconds']} s "
              f"for {t['embedded_texts']} texts, query embedding p50 {t['query_embed_ms_p50']} ms)")


async def main_async(args: argparse.Namespace) -> dict:
    data_path = Path(args.data)
    if not data_path.is_file():
        raise SystemExit(f"bench_recall: no data file at {data_path}; pass --data FILE in LoCoMo's format "
                         f"(tools/make_synthetic_locomo.py writes a small synthetic one)")
    data = json.loads(data_path.read_text(encoding="utf-8"))
    budgets = args.budgets
    methods = METHODS + EXTRA
    scores = {m: {b: [] for b in budgets} for m in methods}
    by_cat = {m: {c: {b: [] for b in budgets} for c in CATEGORIES} for m in methods}
    prompt_tokens = {b: [] for b in budgets}
    convs = [Conversation(sample, i) for i, sample in enumerate(data)]
    timings = []
    by_conversation: dict[str, dict] = {}
    per_question: list[dict] = []
    embedder_id = ""

    def log(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    # Each question's namespace is indexed and committed (fsyncs): in memory when /dev/shm exists.
    shm = Path("/dev/shm")
    scratch = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="vmem-bench-recall-", dir=scratch) as tmp:
        for i, conv in enumerate(convs):
            r = await run_conversation(conv, i, budgets, args.embedder, Path(tmp), log)
            embedder_id = r["embedder"]
            timings.append(r["timing"])
            by_conversation[conv.sample_id] = {m: {str(b): mean(r["scores"][m][b]) for b in budgets} for m in methods}
            per_question += r["per_question"]
            for m in methods:
                for b in budgets:
                    scores[m][b] += r["scores"][m][b]
                    for c in CATEGORIES:
                        by_cat[m][c][b] += r["by_cat"][m][c][b]
            for b in budgets:
                prompt_tokens[b] += r["prompt_tokens"][b]
    questions = sum(len(c.questions) for c in convs)
    figures = {m: {str(b): mean(scores[m][b]) for b in budgets} for m in methods}
    recall = {m: figures[m] for m in METHODS}
    by_category = {m: {str(c): {str(b): mean(by_cat[m][c][b]) for b in budgets} for c in CATEGORIES if by_cat[m][c][budgets[0]]}
                   for m in methods}
    result = {
        "recall": recall,
        "baselines_extra": {m: figures[m] for m in EXTRA},
        "by_category": by_category,
        "by_conversation": by_conversation,
        # The earlier flat form, kept for readers of older output: category -> "method@budget".
        "per_category": {
            c: {f"{m}@{b}": by_category[m][c][b] for m in methods if c in by_category[m] for b in map(str, budgets)}
            for c in sorted({c for m in methods for c in by_category[m]})
        },
        "calibration": calibration(recall, budgets, questions),
        "questions": questions,
        "questions_by_category": {str(c): sum(1 for conv in convs for _q, cat, _e in conv.questions if cat == c)
                                  for c in CATEGORIES},
        "dropped": {"questions": sum(c.dropped_questions for c in convs),
                    "evidence_ids": sum(c.dropped_evidence for c in convs)},
        "dropped_evidence": sum(c.dropped_evidence for c in convs),
        "embedder": embedder_id,
        # Candidates the pager asks the retriever for, per budget.
        "search_limit": {str(b): search_request(State(ns="x/y"), "x/y", "q", b).limit for b in budgets},
        "vmem_prompt_tokens": {str(b): {"max": max(prompt_tokens[b], default=0),
                                        "mean": round(statistics.fmean(prompt_tokens[b]), 1) if prompt_tokens[b] else 0}
                               for b in budgets},
        "conversations": timings,
        "seconds_per_conversation": [t["seconds"] for t in timings],
        "data": str(data_path),
    }
    if args.per_question:
        Path(args.per_question).write_text("".join(json.dumps(row) + "\n" for row in per_question), encoding="utf-8")
    if args.svg:
        title = f"Evidence recall by budget ({data_path.name}, {embedder_id})"
        Path(args.svg).write_text(svg_chart(recall, budgets, title), encoding="utf-8")
    if not args.json:
        print_report(result, budgets)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"LoCoMo-format JSON (default {DEFAULT_DATA})")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--embedder", choices=("default", "hashing", "minilm"), default="default",
                   help="the embedder of vmem's vector retriever and of the vector baseline (default: vmem's default)")
    p.add_argument("--svg", help="also write a chart of recall against budget")
    p.add_argument("--per-question", metavar="FILE", help="also write each question's recall per method and budget (JSON lines)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args()
    result = anyio.run(main_async, args)
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
