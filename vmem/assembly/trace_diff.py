"""Trace diff: what entered and what left the prompt between two traces, and why."""

from __future__ import annotations

import msgspec

from vmem.schemas.events import PromptPacked


class TraceRef(msgspec.Struct, frozen=True):
    turn: int
    attempt: int
    seq: int
    prompt_sha256: str
    prompt_tokens: int
    budget: int


class DiffEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    block_id: str
    section: str
    reason: str = ""
    fused: float | None = None


class TraceDiff(msgspec.Struct, frozen=True):
    """The JSON of ``vmem trace diff A B --json``."""

    ns: str
    a: TraceRef
    b: TraceRef
    entered: tuple[DiffEntry, ...]
    left: tuple[DiffEntry, ...]
    moved: tuple[DiffEntry, ...]  # in both, in another section (reason: the section it was in)
    sections: dict[str, tuple[int, int]]  # name -> (tokens in a, tokens in b)


def _placement(t: PromptPacked) -> dict[str, str]:
    return {b: s.name for s in t.sections for b in s.blocks if not b.startswith("~")}


def diff_traces(ns: str, a: tuple[int, PromptPacked], b: tuple[int, PromptPacked]) -> TraceDiff:
    """Compare two traces; reasons for leaving come from the later trace's records."""
    (seq_a, ta), (seq_b, tb) = a, b
    pa, pb = _placement(ta), _placement(tb)
    why = {lo.block_id: lo.reason for lo in tb.left_out}
    cand = {c.block_id: c for c in tb.candidates}
    for bid, c in cand.items():
        if not c.chosen and c.reason:
            why.setdefault(bid, c.reason)
    entered = tuple(
        DiffEntry(block_id=bid, section=pb[bid], fused=cand[bid].fused if bid in cand else None)
        for bid in sorted(pb.keys() - pa.keys())
    )
    left = tuple(
        DiffEntry(
            block_id=bid, section=pa[bid], fused=cand[bid].fused if bid in cand else None,
            reason=why.get(bid, "flushed from the queue" if pa[bid] == "Recent" else "evicted"),
        )
        for bid in sorted(pa.keys() - pb.keys())
    )
    moved = tuple(
        DiffEntry(block_id=bid, section=pb[bid], reason=f"was in {pa[bid]}")
        for bid in sorted(pa.keys() & pb.keys())
        if pa[bid] != pb[bid]
    )
    tok_a = {s.name: s.tokens for s in ta.sections}
    tok_b = {s.name: s.tokens for s in tb.sections}
    return TraceDiff(
        ns=ns,
        a=TraceRef(ta.turn, ta.attempt, seq_a, ta.prompt_sha256, ta.prompt_tokens, ta.budget),
        b=TraceRef(tb.turn, tb.attempt, seq_b, tb.prompt_sha256, tb.prompt_tokens, tb.budget),
        entered=entered,
        left=left,
        moved=moved,
        sections={n: (tok_a.get(n, 0), tok_b.get(n, 0)) for n in sorted(tok_a.keys() | tok_b.keys())},
    )
