"""Passages: a page too large for what the budget has left is shown in part, recorded, and replayed exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem import Vmem
from vmem.assembly.pack import PackInput, pack
from vmem.assembly.render import render_passage
from vmem.assembly.tokens import get_tokenizer
from vmem.paging.passages import MIN_PASSAGE_TOKENS, best_passage, text_units
from vmem.paging.select import select_resident
from vmem.retrieval.bm25 import query_terms
from vmem.schemas import events as ev
from vmem.schemas.events import PageLoaded
from vmem.schemas.messages import Candidate
from vmem.state.blocks import make_block
from vmem.state.fold import State, fold

NS = "t/a"
TOK = get_tokenizer("cl100k_base")
FILLER = [
    "The keeper logged the weather at dawn and dusk.",
    "Supplies came by boat every second Tuesday.",
    "The lens was cleaned with soft cloth and alcohol.",
    "Visitors were rare in the winter months.",
    "A new rope was fitted to the bell in spring.",
]
ANSWER = "The foghorn sounds twice every thirty seconds when visibility drops below one mile."


def page_text(n: int, answer_at: int) -> str:
    lines = [FILLER[i % len(FILLER)] for i in range(n)]
    lines.insert(answer_at, ANSWER)
    return "\n".join(lines)


# -- choosing the passage -----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.integers(5, 60), st.data(), st.integers(MIN_PASSAGE_TOKENS, 400))
def test_a_passage_fits_its_room_and_starts_and_ends_on_unit_boundaries(n, data, room):
    page = make_block(NS, "page", "document", page_text(n, data.draw(st.integers(0, n))), {"page": "3", "source": "log.md"})
    span = best_passage(page, query_terms("how often does the foghorn sound in fog?"), room, TOK.count)
    assert span is not None  # the answer line holds the query's words and fits any room here
    start, end = span
    units = text_units(page.text)
    assert start in {a for a, _b in units} and end in {b for _a, b in units}
    assert TOK.count(render_passage(page, start, end)) <= room
    assert best_passage(page, query_terms("how often does the foghorn sound in fog?"), room, TOK.count) == span


def test_the_passage_holds_the_unit_that_matches_the_query():
    page = make_block(NS, "page", "document", page_text(60, 41), {"page": "3"})
    start, end = best_passage(page, query_terms("how often does the foghorn sound?"), 80, TOK.count)
    assert ANSWER in page.text[start:end]
    assert render_passage(page, start, end).splitlines()[0].endswith("page 3, excerpt")


def test_no_passage_without_a_matching_unit_or_room():
    page = make_block(NS, "page", "document", page_text(30, 10), {"page": "3"})
    assert best_passage(page, query_terms("submarine cables"), 200, TOK.count) is None
    assert best_passage(page, query_terms("foghorn"), MIN_PASSAGE_TOKENS - 1, TOK.count) is None


# -- the pager's selection ----------------------------------------------------------------------


def _world(budget: int):
    system = make_block(NS, "system", "system", "You are paged by vmem.")
    big = make_block(NS, "page", "document", page_text(70, 52), {"doc": "d", "page": "1"})
    small = make_block(NS, "page", "document", "Supplies came by boat.", {"doc": "d", "page": "2"})
    q = make_block(NS, "message", "user", "How often does the foghorn sound?", {"turn": "1"})
    events = [system, ev.PageLoaded(ns=NS, block_id=system.block_id, turn=1, reason="pin"), big, small, q]
    state = fold(events, State(ns=NS))
    blocks = {b.block_id: b for b in (system, big, small, q)}
    counts = {b: TOK.count(x.text) for b, x in blocks.items()}
    cands = [Candidate(big.block_id, 2.0, {"bm25": 1.0}), Candidate(small.block_id, 0.5, {"bm25": 0.25})]
    return PackInput(state=state, blocks=blocks, block_tokens=counts, turn=1, attempt=0, budget=budget), cands, big


def test_a_top_page_larger_than_the_room_left_is_shown_as_its_best_passage_and_packs_within_budget():
    inp, cands, big = _world(400)
    assert inp.block_tokens[big.block_id] > 400
    sel = select_resident(inp, cands, TOK.count, query="How often does the foghorn sound?")
    assert big.block_id in sel.passages and big.block_id in sel.load
    start, end = sel.passages[big.block_id]
    assert ANSWER in big.text[start:end]
    loads = [PageLoaded(ns=NS, block_id=b, turn=1, passage=sel.passages.get(b, (0, 0))) for b in sel.load]
    after = fold(loads, fold([], inp.state))
    assert after.passages == sel.passages
    packed = pack(PackInput(state=after, blocks=inp.blocks, block_tokens=inp.block_tokens, turn=1, attempt=0,
                            budget=inp.budget), TOK)
    assert packed.tokens <= inp.budget and ANSWER in packed.prompt and "excerpt" in packed.prompt
    # Without a query there is nothing to choose a passage by: whole pages only.
    assert select_resident(inp, cands, TOK.count).passages == {}


def test_a_page_that_fits_whole_is_never_cut():
    inp, cands, big = _world(4000)
    sel = select_resident(inp, cands, TOK.count, query="How often does the foghorn sound?")
    assert sel.passages == {} and big.block_id in sel.keep


def test_reloading_a_passage_whole_and_evicting_it_clear_it_from_the_state():
    page = make_block(NS, "page", "document", page_text(10, 3))
    s = fold([page, PageLoaded(ns=NS, block_id=page.block_id, turn=1, passage=(5, 40))], State(ns=NS))
    assert s.passages == {page.block_id: (5, 40)}
    assert fold([PageLoaded(ns=NS, block_id=page.block_id, turn=2)], s).passages == {}
    s = fold([page, PageLoaded(ns=NS, block_id=page.block_id, turn=1, passage=(5, 40))], State(ns=NS))
    assert fold([ev.PageEvicted(ns=NS, block_id=page.block_id, turn=2)], s).passages == {}


# -- end to end: recorded, re-rendered, re-decided ------------------------------------------------


@pytest.mark.anyio
async def test_a_passage_is_recorded_in_the_log_and_replay_re_renders_and_re_decides_it(tmp_path: Path):
    doc = tmp_path / "keeper.md"
    doc.write_text("# Keeper's manual\n\n" + page_text(160, 120) + "\n")
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest("t/a", doc, page_tokens=1024)
        result = await vm.ask("t/a", "How often does the foghorn sound?", budget=512)
        loads = [s.event async for batch in vm.events("t/a", kinds=["page_loaded"]) for s in batch
                 if s.event.passage != (0, 0)]
        assert loads, "the 1,024-token page does not fit a 512-token prompt: a passage of it is loaded"
        shown = await vm.prompt("t/a", result.turn, 0)
        assert shown.equal and ANSWER in shown.prompt and "excerpt" in shown.prompt
        # Asked again: the passage stays resident as it was (no event), and replay still agrees.
        await vm.ask("t/a", "How often does the foghorn sound?", budget=512)
        report = await vm.replay("t/a", verify=True)
        assert report.equal
        assert report.prompts_checked and report.prompts_equal == report.prompts_checked
        assert report.decisions_checked and report.decisions_equal == report.decisions_checked


class _Source:
    """A BlockSource over dicts (the block store's two reads)."""

    def __init__(self, inp: PackInput) -> None:
        self.inp = inp

    def get_many(self, ns, bids):
        return {b: self.inp.blocks[b] for b in bids if b in self.inp.blocks}

    def token_counts(self, ns, bids, tokenizer):
        return {b: self.inp.block_tokens[b] for b in bids if b in self.inp.block_tokens}


def test_re_deciding_a_fault_that_keeps_a_resident_passage_as_it_was_expects_no_event_for_it():
    from vmem.paging.redo import PagerChecks
    from vmem.schemas.events import CandidateTrace, PageFaultResolved

    inp, cands, big = _world(400)
    query = "How often does the foghorn sound?"
    first = select_resident(inp, cands, TOK.count, query=query)
    loads = [PageLoaded(ns=NS, block_id=b, turn=1, passage=first.passages.get(b, (0, 0))) for b in first.load]
    state = fold(loads, fold([], inp.state))
    again = select_resident(PackInput(state=state, blocks=inp.blocks, block_tokens=inp.block_tokens, turn=2, attempt=0,
                                      budget=inp.budget), cands, TOK.count, query=query)
    assert big.block_id in again.passages and big.block_id not in again.load  # kept as it was: no PageLoaded
    resolved = PageFaultResolved(
        ns=NS, fault_id="t2p", turn=2, loaded=again.load, evicted=again.evict, budget=inp.budget, policy="score",
        tokenizer="cl100k_base", query=query,
        candidates=tuple(CandidateTrace(block_id=c.block_id, fused=c.score, scores=c.scores) for c in cands),
    )
    assert PagerChecks(_Source(inp)).decide(NS, state, resolved) == (again.load, again.evict, {})
