"""The packer: never over budget, deterministic, and summaries never beside their sources."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.assembly.pack import PackInput, pack
from vmem.assembly.tokens import get_tokenizer
from vmem.errors import BudgetError
from vmem.schemas import events as ev
from vmem.state.blocks import make_block
from vmem.state.fold import State, fold

NS = "t/a"
TOK = get_tokenizer("cl100k_base")
WORDS = "lamp tower keeper fog reef tide harbour signal north ledger 1790 ⚓ naïve 東京 x".split()


@st.composite
def scenarios(draw):
    """A state built by events: pages (some resident), messages, a summary of evicted pages."""
    text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=400).map(" ".join)
    pages = [make_block(NS, "page", "document", draw(text), {"doc": "d", "page": str(i)}) for i in range(draw(st.integers(1, 12)))]
    events: list[ev.Event] = list(pages)
    system = make_block(NS, "system", "system", "You are paged by vmem.")
    events += [system, ev.PageLoaded(ns=NS, block_id=system.block_id, turn=1, reason="pin")]
    resident = draw(st.lists(st.sampled_from(pages), unique=True, max_size=len(pages)))
    events += [ev.PageLoaded(ns=NS, block_id=p.block_id, turn=1) for p in resident]
    evicted = [p for p in resident if draw(st.booleans())]
    events += [ev.PageEvicted(ns=NS, block_id=p.block_id, turn=1) for p in evicted]
    blocks = {b.block_id: b for b in pages + [system]}
    if evicted:
        summary = make_block(NS, "summary", "system", draw(text), {"job": "j"})
        sources = tuple(p.block_id for p in evicted)
        events += [summary, ev.SummaryCommitted(ns=NS, job_id="j", summary_id=summary.block_id, sources=sources, compressor="x")]
        blocks[summary.block_id] = summary
        # Sometimes a source comes back: then the summary must stay out.
        if draw(st.booleans()):
            events.append(ev.PageLoaded(ns=NS, block_id=evicted[0].block_id, turn=2))
    for i in range(draw(st.integers(1, 6))):
        m = make_block(NS, "message", "user" if i % 2 == 0 else "assistant", draw(text), {"turn": str(i)})
        events.append(m)
        blocks[m.block_id] = m
    state = fold(events, State(ns=NS))
    budget = draw(st.integers(150, 3000))
    counts = {b: TOK.count(x.text) for b, x in blocks.items()}
    return PackInput(state=state, blocks=blocks, block_tokens=counts, turn=2, attempt=0, budget=budget)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_packed_prompt_never_exceeds_its_budget(inp):
    try:
        packed = pack(inp, TOK)
    except BudgetError:
        return  # the mandatory parts alone do not fit: refused, not overrun
    assert TOK.count(packed.prompt) == packed.tokens <= inp.budget


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_same_state_packs_to_the_same_bytes(inp):
    try:
        a = pack(inp, TOK)
    except BudgetError:
        return
    b = pack(inp, TOK)
    assert a.prompt == b.prompt and a.sha256 == b.sha256 and a.sections == b.sections


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_summary_never_sits_beside_what_it_summarises(inp):
    try:
        packed = pack(inp, TOK)
    except BudgetError:
        return
    shown = {b for s in packed.sections for b in s.blocks}
    for summary, sources in inp.state.summaries.items():
        if summary in shown:
            assert not shown & set(sources)


def test_tiny_budget_is_refused_with_a_clear_error():
    state = fold([make_block(NS, "message", "user", "hello")], State(ns=NS))
    blocks = {b: None for b in state.messages}
    m = make_block(NS, "message", "user", "hello")
    inp = PackInput(state=state, blocks={m.block_id: m}, block_tokens={}, turn=1, attempt=0, budget=40)
    with pytest.raises(BudgetError, match="raise --budget"):
        pack(inp, TOK)
    assert blocks


def test_stable_prefix_is_unchanged_when_only_recent_and_retrieved_change():
    sys_block = make_block(NS, "system", "system", "You are paged by vmem.")
    base = [sys_block, ev.PageLoaded(ns=NS, block_id=sys_block.block_id, turn=1, reason="pin")]
    p1 = make_block(NS, "page", "document", "The keeper lights the lamp at dusk.", {"page": "1"})
    q1 = make_block(NS, "message", "user", "When is the lamp lit?")
    s1 = fold(base + [p1, ev.PageLoaded(ns=NS, block_id=p1.block_id, turn=1), q1], State(ns=NS))
    q2 = make_block(NS, "message", "user", "Who keeps the log?")
    s2 = fold(base + [p1, q1, q2], State(ns=NS))
    blocks = {b.block_id: b for b in (sys_block, p1, q1, q2)}
    a = pack(PackInput(state=s1, blocks=blocks, block_tokens={}, turn=1, attempt=0, budget=800), TOK)
    b = pack(PackInput(state=s2, blocks=blocks, block_tokens={}, turn=2, attempt=0, budget=800), TOK)
    assert a.prompt != b.prompt
    assert a.messages[0].cache_boundary and a.messages[0].content == b.messages[0].content
    assert b.prompt.startswith(a.messages[0].content)
