"""The pager's selection: exact budgets and integrity, for any section table and block sizes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.agent.memory import tool_pair
from vmem.assembly.budget import DEFAULT_TABLE, SectionSpec
from vmem.assembly.pack import PackInput, pack
from vmem.assembly.render import render_block
from vmem.assembly.tokens import get_tokenizer
from vmem.errors import BudgetError
from vmem.paging.select import select_resident
from vmem.schemas import events as ev
from vmem.schemas.messages import Candidate
from vmem.state.blocks import make_block
from vmem.state.fold import State, fold

NS = "t/a"
TOK = get_tokenizer("cl100k_base")
WORDS = "lamp tower keeper fog reef tide harbour signal north ledger 1790 ⚓ naïve 東京 x".split()


@st.composite
def tables(draw):
    """A valid section table: the canonical sections, random priorities and shares.

    Valid means Retrieved fills before the sections whose content depends on
    what is resident (Background, Plan); `validate_table` refuses others.
    """
    names = ["Recent", "Retrieved", "Plan", "State", "Background"]
    prios = draw(st.permutations(list(range(3, 3 + len(names)))).filter(
        lambda p: p[1] < p[2] and p[1] < p[4]))
    table = list(DEFAULT_TABLE[:3])
    for name, prio in zip(names, prios):
        table.append(SectionSpec(name, prio, draw(st.floats(0.0, 1.0)), min_tokens=draw(st.sampled_from([0, 0, 16, 64]))))
    return tuple(table)


def test_a_table_that_fills_background_before_retrieved_is_refused():
    import pytest

    from vmem.assembly.budget import fill
    from vmem.errors import UsageError

    bad = (*DEFAULT_TABLE[:3], SectionSpec("Background", 3, 0.5), SectionSpec("Retrieved", 4, 0.5))
    with pytest.raises(UsageError, match="before Retrieved"):
        fill({}, 1000, TOK.count, bad)


@st.composite
def worlds(draw):
    text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=300).map(" ".join)
    events: list[ev.Event] = []
    system = make_block(NS, "system", "system", "You are paged by vmem.")
    events += [system, ev.PageLoaded(ns=NS, block_id=system.block_id, turn=1, reason="pin")]
    blocks = {system.block_id: system}
    pages = [make_block(NS, "page", "document", draw(text), {"doc": "d", "page": str(i)}) for i in range(draw(st.integers(1, 14)))]
    events += pages
    for i, p in enumerate(pages[1:], 1):
        events.append(ev.EdgeAdded(ns=NS, src=p.block_id, dst=pages[i - 1].block_id, kind="follows"))
    blocks.update((p.block_id, p) for p in pages)
    # Tool calls with their results: integrity groups.
    for i in range(draw(st.integers(0, 3))):
        pair = tool_pair(NS, f"call-{i}", "calculator", f'{{"expression": "{i} * {draw(st.integers(0, 99))}"}}', draw(text), 1)
        events += pair
        blocks.update((b.block_id, b) for b in pair if isinstance(b, ev.BlockWritten))
    resident = draw(st.lists(st.sampled_from(list(blocks)[1:]), unique=True, max_size=6))
    events += [ev.PageLoaded(ns=NS, block_id=b, turn=1) for b in resident]
    if len(pages) >= 2 and draw(st.booleans()):
        summary = make_block(NS, "summary", "system", draw(text), {"job": "j"})
        sources = tuple(p.block_id for p in pages[:2])
        events += [summary, ev.SummaryCommitted(ns=NS, job_id="j", summary_id=summary.block_id, sources=sources, compressor="x")]
        blocks[summary.block_id] = summary
    q = make_block(NS, "message", "user", draw(text), {"turn": "2"})
    events.append(q)
    blocks[q.block_id] = q
    state = fold(events, State(ns=NS))
    counts = {b: TOK.count(x.text) for b, x in blocks.items()}
    pool = [b for b in blocks if b not in state.pinned and b != q.block_id]
    chosen = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool))) if pool else []
    cands = [Candidate(b, draw(st.floats(0.01, 3.0)), {"bm25": 1.0}) for b in chosen]
    cands.sort(key=lambda c: (-c.score, c.block_id))
    inp = PackInput(state=state, blocks=blocks, block_tokens=counts, turn=2, attempt=0, budget=draw(st.integers(200, 4000)))
    return inp, cands


def _apply(inp: PackInput, sel) -> PackInput:
    events = [ev.PageEvicted(ns=NS, block_id=b, turn=2) for b in sel.evict]
    events += [ev.PageLoaded(ns=NS, block_id=b, turn=2, passage=sel.passages.get(b, (0, 0))) for b in sel.load]
    state = fold(events, State.__new__(State) if False else _copy(inp.state))
    return PackInput(state=state, blocks=inp.blocks, block_tokens=inp.block_tokens, turn=2, attempt=0, budget=inp.budget)


def _query(inp: PackInput) -> str:
    """The turn's question (the newest message): what passages are chosen by."""
    return inp.blocks[inp.state.messages[-1]].text


def _copy(state: State) -> State:
    from vmem.state.fold import decode_snapshot, encode_snapshot

    return decode_snapshot(encode_snapshot(state))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(worlds(), tables(), st.sampled_from(["score", "lru"]))
def test_what_the_pager_keeps_the_packer_fits_and_never_over_budget(world, table, policy):
    inp, cands = world
    try:
        sel = select_resident(inp, cands, TOK.count, policy=policy, table=table, query=_query(inp))
        packed = pack(_apply(inp, sel), TOK, table)
    except BudgetError:
        return
    assert TOK.count(packed.prompt) == packed.tokens <= inp.budget
    retrieved = next(s for s in packed.sections if s.name == "Retrieved")
    assert set(retrieved.blocks) == set(sel.keep)


@SETTINGS
@given(worlds(), st.sampled_from(["score", "lru"]))
def test_tool_calls_and_results_are_never_split(world, policy):
    inp, cands = world
    try:
        sel = select_resident(inp, cands, TOK.count, policy=policy, query=_query(inp))
        packed = pack(_apply(inp, sel), TOK)
    except BudgetError:
        return
    shown = {b for s in packed.sections for b in s.blocks}
    state = inp.state
    for result, edges in state.edges.items():
        for kind, call in edges:
            if kind == "result_of":
                assert (result in shown) == (call in shown)


@SETTINGS
@given(worlds(), st.sampled_from(["score", "lru"]))
def test_a_summary_and_its_sources_are_never_both_resident(world, policy):
    inp, cands = world
    try:
        sel = select_resident(inp, cands, TOK.count, policy=policy)
    except BudgetError:
        return
    kept = set(sel.keep)
    for summary, sources in inp.state.summaries.items():
        assert not (summary in kept and kept & set(sources))


@SETTINGS
@given(worlds(), st.sampled_from(["score", "lru"]))
def test_the_same_state_selects_the_same_blocks(world, policy):
    inp, cands = world
    try:
        a = select_resident(inp, cands, TOK.count, policy=policy, query=_query(inp))
    except BudgetError:
        return
    b = select_resident(_copy_input(inp), list(reversed(cands))[::-1], TOK.count, policy=policy, query=_query(inp))
    assert a == b


def _copy_input(inp: PackInput) -> PackInput:
    return PackInput(state=_copy(inp.state), blocks=dict(inp.blocks), block_tokens=dict(inp.block_tokens),
                     turn=inp.turn, attempt=inp.attempt, budget=inp.budget)


@SETTINGS
@given(worlds())
def test_pinned_blocks_are_never_evicted(world):
    inp, cands = world
    try:
        sel = select_resident(inp, cands, TOK.count)
    except BudgetError:
        return
    assert not set(sel.evict) & set(inp.state.pinned)


def test_at_least_95_percent_of_the_budget_is_used_when_candidates_abound():
    events: list[ev.Event] = []
    system = make_block(NS, "system", "system", "You are paged by vmem.")
    events += [system, ev.PageLoaded(ns=NS, block_id=system.block_id, turn=1, reason="pin")]
    pages = [make_block(NS, "page", "document", " ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + (i * 7) % 80)), {"page": str(i)}) for i in range(300)]
    q = make_block(NS, "message", "user", "where is the lamp?")
    state = fold(events + pages + [q], State(ns=NS))
    blocks = {b.block_id: b for b in [system, q, *pages]}
    counts = {b: TOK.count(x.text) for b, x in blocks.items()}
    cands = [Candidate(p.block_id, 1.0 - i / 1000, {"bm25": 1.0}) for i, p in enumerate(pages)]
    for budget in (512, 1024, 2048, 4096):
        inp = PackInput(state=state, blocks=blocks, block_tokens=counts, turn=1, attempt=0, budget=budget)
        sel = select_resident(inp, cands, TOK.count)
        packed = pack(_apply(inp, sel), TOK)
        assert 0.95 * budget <= packed.tokens <= budget, (budget, packed.tokens)


def test_score_policy_evicts_the_least_useful_and_lru_the_least_recently_used():
    def page(i: int):
        # Pages of exactly equal cost in a prompt (block ids tokenize to
        # different lengths, so pad the text), so only the policy decides.
        for lamps in range(10, 120):
            for towers in range(3):
                p = make_block(NS, "page", "document", f"page {i} " + "lamp " * lamps + "tower " * towers, {"page": str(i)})
                if TOK.count(render_block(p)) == 80:
                    return p
        raise AssertionError("no padding gives 80 tokens")

    old_relevant, new_irrelevant, incoming = page(0), page(1), page(2)
    system = make_block(NS, "system", "system", "You are paged by vmem.")
    q = make_block(NS, "message", "user", "question")
    events = [system, ev.PageLoaded(ns=NS, block_id=system.block_id, turn=1, reason="pin"), old_relevant, new_irrelevant, incoming, q,
              ev.PageLoaded(ns=NS, block_id=old_relevant.block_id, turn=1),
              ev.PageLoaded(ns=NS, block_id=new_irrelevant.block_id, turn=2)]
    state = fold(events, State(ns=NS))
    blocks = {b.block_id: b for b in (system, old_relevant, new_irrelevant, incoming, q)}
    counts = {b: TOK.count(x.text) for b, x in blocks.items()}
    cands = [Candidate(incoming.block_id, 2.0, {"bm25": 1.0}), Candidate(old_relevant.block_id, 1.0, {"bm25": 0.5})]
    # The smallest budget with room for two of the three pages.
    for budget in range(300, 1500, 5):
        inp = PackInput(state=state, blocks=blocks, block_tokens=counts, turn=3, attempt=0, budget=budget)
        if len(select_resident(inp, cands, TOK.count).keep) == 2:
            break
    by_score = select_resident(inp, cands, TOK.count, policy="score")
    by_lru = select_resident(inp, cands, TOK.count, policy="lru")
    assert by_score.evict == (new_irrelevant.block_id,) and by_score.load == (incoming.block_id,)
    assert by_lru.evict == (old_relevant.block_id,) and by_lru.load == (incoming.block_id,)
