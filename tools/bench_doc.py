#!/usr/bin/env python3
"""Does the page that answers a question end up resident in the packed prompt?  Real documentation, by budget.

Document: the Python standard library's own documentation as pydoc renders it
in plain text (``pydoc.render_doc(module, renderer=pydoc.plaintext)``) for the
modules listed in the question file, each under a ``# module`` heading, in one
markdown-ish file (18 modules, about 106,000 cl100k tokens, 510 pages on
Python 3.11.7).  It is generated at run time
from the running Python (3.11.x), in a fresh interpreter with a fixed
environment (pydoc shows module state and reads $PYTHONDOCS); memory addresses
in object reprs and the FILE section (where Python is installed) are removed,
so the same Python build always gives the same bytes (its sha256 is reported).
It is ingested with vmem's normal ingest (``Vmem.ingest``, 256-token pages,
the default of ``vmem ingest``).

Questions (tools/bench_doc_questions.json): hand-written paraphrases, each of
one sentence of the document (its `target`).  The answering pages of a
question are the pages whose text holds the target, comparing text with runs
of whitespace and pydoc's `` |  `` class gutter collapsed to single spaces; a
target cut in two by a page break makes both pages answering (either counts).
The run stops, naming the questions, if a target is not in the document or
occurs more than once (a docstring changed: re-check the question rather than
score it silently), or if its page is not under its module's heading.

Measure, for each question and budget: vmem runs the real turn through the
public API: ``Vmem.ask(ns, question, budget=B)`` with the default offline
model, as turn 1 of a fresh namespace holding just the document (so no
earlier question's messages or pages take room).  The document is ingested
once (``Vmem.ingest``) into a template home; each question and budget runs
in a copy of that home, removed after it (a file copy, whatever the
embedder: MiniLM takes minutes to embed the document).  The question counts as resident when an answering page
is among the block ids of the Retrieved section of the PromptPacked trace of
the turn's first attempt (``Vmem.traces``), whole, or as a passage (a span of
the page, when the whole page did not fit) whose text holds the target
sentence: what the model saw before any page fault of its own.  The text is
checked in that attempt's exact prompt, re-rendered from the log
(``Vmem.prompt``); the run stops if it does not re-render to the SHA-256 its
trace recorded.  The trace's candidate list says why a missed page was left
out (ranked but over budget, or not retrieved at all).

Baseline, BM25 alone: the same pages ranked by a bare tantivy BM25
(vmem._bm25.Bm25Index over the ingested namespace), filling the budget minus
the question's tokens with whole pages in rank order (each page costs its
tokens plus one for the separator; a page that does not fit is skipped and the
next ones are still tried).  It has no fixed prompt sections to pay for: it is
the most the same pages can give a budget, not a prompt a model could run on.
It looks as deep into its ranking as vmem's pager looks into its fused
candidates (vmem.paging.decisions.SEARCH_LIMIT pages, 48 today: far more than any budget here holds).

Figures are fractions of the questions (0..1).  Besides `resident` (the
measure), the JSON has: `answer_ranked_within`, how often an answering page is
in the top k of vmem's fused ranking and of BM25's, whatever the budget (so a
miss can be put on ranking or on room); `vmem_prompt`, the mean prompt tokens,
Retrieved tokens and Retrieved pages of the first attempt; `cited`, how often
the final answer (after the offline model's own page faults, up to 3) cites an
answering page; `vmem_misses`; and with --verbose `per_question`.

    tools/bench_doc.py [--budgets 512,1024,2048] [--questions FILE] [--embedder hashing|minilm] [--verbose] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json  # noqa: E402

from vmem import Vmem  # noqa: E402
from vmem.actors.retriever import INDEX_FORMAT  # noqa: E402
from vmem.assembly.ingest import DEFAULT_PAGE_TOKENS  # noqa: E402
from vmem.assembly.tokens import Tokenizer, get_tokenizer  # noqa: E402
from vmem.paging.decisions import SEARCH_LIMIT  # noqa: E402
from vmem.retrieval.bm25 import Bm25Index  # noqa: E402
from vmem.retrieval.choice import default_embedder, make_embedder  # noqa: E402
from vmem.schemas.events import CandidateTrace, PromptPacked  # noqa: E402

QUESTIONS = Path(__file__).resolve().with_name("bench_doc_questions.json")
BUDGETS = (512, 1024, 2048)
DOC_NAME = "pydoc-stdlib.md"
TEMPLATE_NS = "bench/doc"
BM25_LIMIT = SEARCH_LIMIT  # BM25 alone looks as deep into its ranking as vmem's pager does into its own
TOP_K = (1, 3, 5, 10)

# Run in a fresh interpreter: pydoc renders module state (logging's handlers)
# and reads $PYTHONDOCS for the reference URLs, so neither may leak in.
_RENDER = (
    "import importlib, json, pydoc, sys\n"
    "mods = json.loads(sys.argv[1])\n"
    "json.dump({m: pydoc.render_doc(importlib.import_module(m), renderer=pydoc.plaintext) for m in mods}, sys.stdout)\n"
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_FILE_SECTION = re.compile(r"^FILE\n(?:    .*\n?)+", re.MULTILINE)
_GUTTER = re.compile(r"(?:^|\n)[ \t|]*")


class Question(NamedTuple):
    id: str
    module: str
    question: str
    target: str


class Page(NamedTuple):
    block_id: str
    number: int
    heading: str
    tokens: int
    text: str


class VmemTurn(NamedTuple):
    """What one real turn's first attempt showed the model, from its trace."""

    resident: tuple[str, ...]  # block ids of the Retrieved section
    retrieved_tokens: int
    retrieved_budget: int
    prompt_tokens: int
    candidates: tuple[CandidateTrace, ...]
    retriever_errors: tuple[str, ...]
    cited: tuple[str, ...]  # of the final answer, after the model's own faults
    prompt: str  # the first attempt's prompt, re-rendered from the log (checked against its trace)


class Outcome(NamedTuple):
    hit: bool
    detail: str


def flat(text: str) -> str:
    """`text` with pydoc's layout removed: line breaks, indentation and the class gutter become one space."""
    return " ".join(_GUTTER.sub(" ", text).split())


def _render_env() -> dict[str, str]:
    """A fixed environment for pydoc: nothing of the caller's but what may be needed to start Python at all."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LD_LIBRARY_PATH", "SYSTEMROOT")}
    return env | {"PYTHONHASHSEED": "0"}


def render_document(modules: Sequence[str]) -> str:
    """The pydoc plain text of `modules`, each under a ``# module`` heading."""
    proc = subprocess.run(
        [sys.executable, "-s", "-P", "-c", _RENDER, json.dumps(list(modules))],
        env=_render_env(), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench_doc: rendering the pydoc of {', '.join(modules)} failed: {proc.stderr.strip()[-800:]}")
    docs: dict[str, str] = json.loads(proc.stdout)
    parts = []
    for module in modules:
        text = _ADDRESS.sub("", docs[module])
        text = _FILE_SECTION.sub("", text)
        parts.append(f"# {module}\n\n{text.strip()}\n")
    return "\n".join(parts)


def load_questions(path: Path) -> tuple[list[str], list[Question]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    questions = [Question(q["id"], q["module"], q["question"], flat(q["target"])) for q in data["questions"]]
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"bench_doc: {path} repeats a question id")
    return list(data["modules"]), questions


def check_targets(document: str, modules: Sequence[str], questions: Sequence[Question]) -> None:
    """Stop unless every target occurs exactly once in the document, in a module it names."""
    text = flat(document)
    problems = []
    for q in questions:
        n = text.count(q.target)
        if q.module not in modules:
            problems.append(f"{q.id}: module {q.module!r} is not one of the rendered modules")
        elif n != 1:
            where = "is not in" if n == 0 else f"occurs {n} times in"
            problems.append(f"{q.id}: target {where} the document: {q.target[:90]!r}")
    if problems:
        raise SystemExit(
            f"bench_doc: {len(problems)} question(s) do not match the pydoc of Python {sys.version.split()[0]} "
            f"(the targets were written against 3.11.7's docstrings); fix the question file:\n  " + "\n  ".join(problems)
        )


def answering_pages(pages: Sequence[Page], flats: Sequence[str], q: Question) -> list[Page]:
    """The pages holding `q`'s target; both pages of a break if the target straddles one."""
    found = [p for p, f in zip(pages, flats) if q.target in f]
    if not found:
        for i in range(len(pages) - 1):
            if q.target in f"{flats[i]} {flats[i + 1]}":
                found = [pages[i], pages[i + 1]]
                break
    if not found:
        raise SystemExit(f"bench_doc: {q.id}: the target is in the document but on no page or pair of pages")
    if all(p.heading != q.module for p in found):
        raise SystemExit(f"bench_doc: {q.id}: the target's page is under heading {found[0].heading!r}, not {q.module!r}")
    return found


async def read_pages(vm: Vmem, ns: str, tok: Tokenizer) -> list[Page]:
    """The ingested pages of `ns`, in document order."""
    view = vm._home.view(ns)
    await view.catch_up()
    ids = [b for b, meta in view.state.blocks.items() if meta.kind == "page"]
    blocks = vm._home.store.get_many(ns, ids)
    counts = vm._home.store.token_counts(ns, ids, tok)
    pages = []
    for b in ids:
        attrs = dict(blocks[b].attrs)
        pages.append(Page(b, int(attrs["page"]), attrs.get("heading", ""), counts[b], blocks[b].text))
    return sorted(pages, key=lambda p: p.number)


def bm25_fill(index: Bm25Index, question: str, capacity: int, tokens: dict[str, int]) -> tuple[list[str], list[str]]:
    """(ranked page ids, the ones that fill `capacity` tokens in rank order, each plus a separator token)."""
    ranked = [b for b, _score in index.search(question, BM25_LIMIT)]
    chosen: list[str] = []
    used = 0
    for b in ranked:
        cost = tokens[b] + 1
        if used + cost <= capacity:
            chosen.append(b)
            used += cost
    return ranked, chosen


async def vmem_turn(vm: Vmem, ns: str, question: str, budget: int) -> VmemTurn:
    """Ask `question` as the first turn of `ns` (the document already ingested), read the first attempt's trace."""
    result = await vm.ask(ns, question, budget=budget)
    first: PromptPacked = next(t for _seq, t in await vm.traces(ns, result.turn) if t.attempt == 0)
    retrieved = next(s for s in first.sections if s.name == "Retrieved")
    shown = await vm.prompt(ns, result.turn, first.attempt)
    if not shown.equal:
        raise SystemExit(f"bench_doc: the prompt of {ns} turn {result.turn} re-renders to sha256 {shown.sha256}, "
                         f"its trace says {shown.recorded_sha256}")
    return VmemTurn(
        resident=retrieved.blocks, retrieved_tokens=retrieved.tokens, retrieved_budget=retrieved.budget,
        prompt_tokens=first.prompt_tokens, candidates=first.candidates, retriever_errors=first.retriever_errors,
        cited=result.cited, prompt=shown.prompt,
    )


def fraction(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else 0.0


def rank_of(order: Sequence[str], answer_ids: set[str]) -> int | None:
    """1-based rank of the first answering page in `order`, or None."""
    return next((i for i, b in enumerate(order, start=1) if b in answer_ids), None)


def vmem_outcome(turn: VmemTurn, answer_ids: set[str], target: str, page_texts: dict[str, str]) -> Outcome:
    """Resident: an answering page is in Retrieved, whole, or as a passage that holds the target sentence."""
    room = f"Retrieved {len(turn.resident)} page(s), {turn.retrieved_tokens}/{turn.retrieved_budget} tok"
    rank = rank_of([c.block_id for c in turn.candidates], answer_ids)
    shown = answer_ids & set(turn.resident)
    if shown:
        prompt = flat(turn.prompt)
        if any(flat(page_texts[b]) in prompt for b in shown):
            return Outcome(True, f"fused rank {rank}; {room}")
        if target in prompt:
            return Outcome(True, f"fused rank {rank}, as a passage; {room}")
        return Outcome(False, f"fused rank {rank}, as a passage without the answer; {room}")
    if rank is None:
        return Outcome(False, f"not retrieved (not among the {len(turn.candidates)} candidates); {room}")
    c = turn.candidates[rank - 1]
    parts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(c.scores.items()))
    return Outcome(False, f"fused rank {rank} ({c.fused:.3f} = {parts}), left out: {c.reason or 'not chosen'}; {room}")


def bm25_outcome(ranked: list[str], chosen: list[str], answer_ids: set[str]) -> Outcome:
    rank = rank_of(ranked, answer_ids)
    where = f"rank {rank}" if rank is not None else f"not in the top {BM25_LIMIT}"
    return Outcome(bool(answer_ids & set(chosen)), f"{where}, {len(chosen)} page(s) fit")


def within(ranks: Sequence[int | None], k: int) -> float:
    return fraction([r is not None and r <= k for r in ranks])


class Document(NamedTuple):
    """The rendered document, ingested once into a template namespace, and what the questions need of it."""

    path: Path
    text: str
    tokens: int
    pages: list[Page]
    answers: dict[str, set[str]]  # question id -> answering page ids
    bm25: dict[tuple[str, int], tuple[list[str], list[str]]]  # (question id, budget) -> (ranked, chosen)


async def prepare(tmp: Path, modules: Sequence[str], questions: Sequence[Question], budgets: Sequence[int],
                  embedder: object) -> Document:
    """Render and ingest the document (into the template home, once), locate every answer, run BM25."""
    tok = get_tokenizer("cl100k_base")
    text = render_document(modules)
    check_targets(text, modules, questions)
    path = tmp / DOC_NAME
    path.write_text(text, encoding="utf-8")
    async with Vmem.open(tmp / "template", create=True, embedder=embedder) as vm:
        await vm.ingest(TEMPLATE_NS, path)
        pages = await read_pages(vm, TEMPLATE_NS, tok)
        flats = [flat(p.text) for p in pages]
        answers = {q.id: {p.block_id for p in answering_pages(pages, flats, q)} for q in questions}
        tokens = {p.block_id: p.tokens for p in pages}
        index = Bm25Index.open(vm._home.index_dir(TEMPLATE_NS) / f"bm25-{INDEX_FORMAT}")
        try:
            bm25 = {
                (q.id, b): bm25_fill(index, q.question, b - tok.count(q.question), tokens)
                for q in questions for b in budgets
            }
        finally:
            index.close()
    return Document(path, text, tok.count(text), pages, answers, bm25)


async def ask_everywhere(tmp: Path, home: Path, question: str, budgets: Sequence[int], embedder: object) -> dict[int, VmemTurn]:
    """The question as turn 1 of the ingested namespace at each budget, each in a fresh copy of the template home.

    A copy of the ingested home is a fresh namespace at the cost of a file
    copy, whatever the embedder (MiniLM takes minutes to embed the document).
    """
    turns: dict[int, VmemTurn] = {}
    for b in budgets:
        shutil.copytree(tmp / "template", home)
        async with Vmem.open(home, embedder=embedder) as vm:
            turns[b] = await vmem_turn(vm, TEMPLATE_NS, question, b)
        shutil.rmtree(home)
    return turns


async def main_async(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    budgets: list[int] = args.budgets
    modules, questions = load_questions(Path(args.questions))
    hits: dict[str, dict[int, list[bool]]] = {name: {b: [] for b in budgets} for name in ("vmem", "bm25")}
    cited: dict[int, list[bool]] = {b: [] for b in budgets}
    misses: dict[int, list[str]] = {b: [] for b in budgets}
    shape: dict[int, dict[str, list[int]]] = {
        b: {"prompt_tokens": [], "retrieved_tokens": [], "retrieved_pages": []} for b in budgets
    }
    fused_ranks: list[int | None] = []
    bm25_ranks: list[int | None] = []
    retriever_errors: list[str] = []
    per_question: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="vmem-bench-doc-") as tmp_dir:
        tmp = Path(tmp_dir)
        embedder = default_embedder() if args.embedder == "default" else make_embedder(args.embedder)
        doc = await prepare(tmp, modules, questions, budgets, embedder)
        if not args.json:
            print(f"document: pydoc of {len(modules)} modules (Python {sys.version.split()[0]}), {doc.tokens} tokens, "
                  f"{len(doc.pages)} pages of <= {DEFAULT_PAGE_TOKENS} tokens; {len(questions)} questions, "
                  f"budgets {budgets}; embedder {embedder.id}", flush=True)
        page_texts = {p.block_id: p.text for p in doc.pages}
        for i, q in enumerate(questions):
            answer_ids = doc.answers[q.id]
            turns = await ask_everywhere(tmp, tmp / f"q{i:02d}", q.question, budgets, embedder)
            # A fresh namespace ranks the same whatever the budget: take the first budget's ranking.
            fused_ranks.append(rank_of([c.block_id for c in turns[budgets[0]].candidates], answer_ids))
            bm25_ranks.append(rank_of(doc.bm25[(q.id, budgets[0])][0], answer_ids))
            pages = sorted(p.number for p in doc.pages if p.block_id in answer_ids)
            row: dict = {"id": q.id, "module": q.module, "pages": pages, "vmem": {}, "bm25": {}}
            for b in budgets:
                v = vmem_outcome(turns[b], answer_ids, q.target, page_texts)
                r = bm25_outcome(*doc.bm25[(q.id, b)], answer_ids)
                hits["vmem"][b].append(v.hit)
                hits["bm25"][b].append(r.hit)
                cited[b].append(bool(answer_ids & set(turns[b].cited)))
                if not v.hit:
                    misses[b].append(q.id)
                shape[b]["prompt_tokens"].append(turns[b].prompt_tokens)
                shape[b]["retrieved_tokens"].append(turns[b].retrieved_tokens)
                shape[b]["retrieved_pages"].append(len(turns[b].resident))
                retriever_errors += [f"{q.id}@{b}: {e}" for e in turns[b].retriever_errors]
                row["vmem"][str(b)] = {"resident": v.hit, "detail": v.detail, "cited": cited[b][-1]}
                row["bm25"][str(b)] = {"resident": r.hit, "detail": r.detail}
            per_question.append(row)
            if args.verbose and not args.json:
                print_question(q, row, budgets)
    result = {
        "budgets": budgets,
        "resident": {name: {str(b): fraction(by_b[b]) for b in budgets} for name, by_b in hits.items()},
        "questions": len(questions),
        "document_tokens": doc.tokens,
        "pages": len(doc.pages),
        "modules": modules,
        "seconds": round(time.perf_counter() - started, 1),
        "embedder": embedder.id,
        "cited": {str(b): fraction(cited[b]) for b in budgets},
        "vmem_prompt": {str(b): {name: round(statistics.fmean(xs), 1) for name, xs in by_b.items()} for b, by_b in shape.items()},
        "answer_ranked_within": {
            "vmem_fused": {str(k): within(fused_ranks, k) for k in TOP_K},
            "bm25": {str(k): within(bm25_ranks, k) for k in TOP_K},
        },
        "vmem_misses": {str(b): misses[b] for b in budgets},
        "retriever_errors": retriever_errors,
        "python": sys.version.split()[0],
        "document_sha256": hashlib.sha256(doc.text.encode()).hexdigest(),
        "page_tokens": DEFAULT_PAGE_TOKENS,
    }
    if args.verbose:
        result["per_question"] = per_question
    if not args.json:
        print_summary(result)
    return result


def print_question(q: Question, row: dict, budgets: Sequence[int]) -> None:
    print(f"[{q.id}] page {'/'.join(map(str, row['pages']))}: {q.question}")
    for b in budgets:
        v, r = row["vmem"][str(b)], row["bm25"][str(b)]
        print(f"  {b:>5}  vmem {'hit ' if v['resident'] else 'MISS'} {v['detail']}{'; answer cites it' if v['cited'] else ''}")
        print(f"  {'':>5}  bm25 {'hit ' if r['resident'] else 'MISS'} {r['detail']}")


def print_summary(result: dict) -> None:
    resident, cited, shape = result["resident"], result["cited"], result["vmem_prompt"]
    print(f"\n{'budget':>7} {'vmem resident':>14} {'BM25 alone':>11}   vmem prompt (mean: tokens, Retrieved tokens, pages)"
          f"   vmem answer cites it")
    for b in map(str, result["budgets"]):
        s = shape[b]
        used = f"{s['prompt_tokens']:>6.0f} {s['retrieved_tokens']:>6.0f} {s['retrieved_pages']:>5.1f}"
        print(f"{b:>7} {resident['vmem'][b]:>14.1%} {resident['bm25'][b]:>11.1%}   {used:<51}   {cited[b]:>20.1%}")
    ranked = result["answer_ranked_within"]
    print("answering page ranked within the top k, whatever the budget: " + ", ".join(
        f"k={k} fused {ranked['vmem_fused'][str(k)]:.0%} / BM25 {ranked['bm25'][str(k)]:.0%}" for k in TOP_K))
    for b, missed in result["vmem_misses"].items():
        if missed:
            print(f"vmem misses at {b}: {', '.join(missed)}")
    if result["retriever_errors"]:
        print(f"retriever errors: {'; '.join(result['retriever_errors'])}")
    print(f"{result['questions']} questions; {result['document_tokens']} document tokens in {result['pages']} pages "
          f"(pydoc of {len(result['modules'])} modules, Python {result['python']}); {result['seconds']} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--questions", default=str(QUESTIONS), help=f"question file (default {QUESTIONS.name})")
    p.add_argument("--verbose", action="store_true", help="per-question detail (also in the JSON, as per_question)")
    p.add_argument("--embedder", choices=("default", "hashing", "minilm"), default="default",
                   help="vmem's embedder (default: the one Vmem.open picks)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args()
    result = anyio.run(main_async, args)
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    main()
