"""The fold: pure, deterministic, and a snapshot folds on to the same state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmem.schemas import events as ev
from vmem.state.blocks import make_block
from vmem.state.fold import State, decode_snapshot, encode_snapshot, fold, state_hash

NS = "t/a"
IDS = [make_block(NS, "page", "document", f"page {i}").block_id for i in range(6)]


@st.composite
def event_lists(draw):
    out: list[ev.Event] = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["block", "load", "evict", "edge", "summary", "fault", "turn", "error"]))
        i = draw(st.integers(0, len(IDS) - 1))
        if kind == "block":
            out.append(make_block(NS, "page", "document", f"page {i}"))
        elif kind == "load":
            out.append(ev.PageLoaded(ns=NS, block_id=IDS[i], turn=1, reason=draw(st.sampled_from(["fault", "pin"]))))
        elif kind == "evict":
            out.append(ev.PageEvicted(ns=NS, block_id=IDS[i], turn=1))
        elif kind == "edge":
            out.append(ev.EdgeAdded(ns=NS, src=IDS[i], dst=IDS[(i + 1) % len(IDS)], kind="follows"))
        elif kind == "summary":
            out.append(ev.SummaryCommitted(ns=NS, job_id=f"j{i}", summary_id=f"s{i}", sources=(IDS[i],), compressor="x"))
        elif kind == "fault":
            out.append(ev.PageFaultRaised(ns=NS, fault_id=f"f{i}", turn=1, query="q"))
        elif kind == "turn":
            out.append(ev.TurnStarted(ns=NS, turn=i, question="q", budget=100, model="offline"))
        else:
            out.append(ev.ErrorRaised(ns=NS, turn=1, where="w", code="c", message="m"))
    return out


@settings(max_examples=200)
@given(event_lists())
def test_fold_is_deterministic(events):
    assert state_hash(fold(events, State(ns=NS))) == state_hash(fold(list(events), State(ns=NS)))


@settings(max_examples=200)
@given(event_lists(), st.data())
def test_snapshot_then_tail_equals_fold_from_zero(events, data):
    cut = data.draw(st.integers(0, len(events)))
    snap = decode_snapshot(encode_snapshot(fold(events[:cut], State(ns=NS))))
    assert state_hash(fold(events[cut:], snap)) == state_hash(fold(events, State(ns=NS)))


def test_the_same_block_written_twice_is_one_block():
    b = make_block(NS, "page", "document", "same text", {"doc": "d"})
    s = fold([b, b], State(ns=NS))
    assert len(s.blocks) == 1 and s.counters["blocks"] == 1


def test_block_id_is_a_content_hash():
    a = make_block(NS, "page", "document", "x", {"b": "2", "a": "1"})
    b = make_block(NS, "page", "document", "x", {"a": "1", "b": "2"})
    c = make_block(NS, "page", "document", "y", {"a": "1", "b": "2"})
    assert a.block_id == b.block_id != c.block_id and len(a.block_id) == 32


def test_eviction_moves_a_page_to_the_hot_tier_and_a_load_brings_it_back():
    b = make_block(NS, "page", "document", "p")
    s = fold([b, ev.PageLoaded(ns=NS, block_id=b.block_id, turn=1)], State(ns=NS))
    assert b.block_id in s.resident
    fold([ev.PageEvicted(ns=NS, block_id=b.block_id, turn=1)], s)
    assert b.block_id not in s.resident and b.block_id in s.hot
    fold([ev.PageLoaded(ns=NS, block_id=b.block_id, turn=2)], s)
    assert b.block_id in s.resident and b.block_id not in s.hot
