"""The pager's pure decision: which blocks should be resident for this turn.

Given the state, the retrieval candidates (fused scores) and the budget, it
orders every eligible block by a policy, keeps what the section table lets
the Retrieved section hold (the same `fill` the packer uses), and returns
what to load and what to evict.  No I/O, no clock; ties broken by block id.

Policies (eviction is the other side of keeping):
- ``score`` (default): least useful for the current turn goes first.  Blocks
  are ranked by fused score for this turn's query; resident blocks the query
  did not match follow, most recently used first.
- ``lru``: new candidates by score first, then resident blocks by recency of
  use, so the least recently used is evicted first.
Explicitly requested blocks always rank first.  Pinned blocks are never
candidates for eviction.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import msgspec

from vmem.assembly.budget import DEFAULT_TABLE, Item, SectionSpec, fill, item_units, section_overhead
from vmem.assembly.pack import PackInput, block_item, section_items, tool_partner
from vmem.paging.passages import MIN_PASSAGE_TOKENS, best_passage
from vmem.retrieval.bm25 import query_terms
from vmem.schemas.events import CandidateTrace
from vmem.schemas.messages import Candidate

Policy = Literal["score", "lru"]
EXPLICIT_SCORE = 1e9


class Selection(msgspec.Struct, frozen=True):
    keep: tuple[str, ...]
    load: tuple[str, ...]  # not resident, or resident but shown differently (whole or which passage)
    evict: tuple[str, ...]
    trace: tuple[CandidateTrace, ...]
    passages: dict[str, tuple[int, int]] = {}  # kept blocks shown as a passage: character offsets


# Pages ranked this high that did not fit whole may be shown as a passage.
PASSAGE_RANKS = 4
# The room one passage should have: a few sentences around the query's words.
PASSAGE_TOKENS = 150


def preference(
    inp: PackInput, candidates: Sequence[Candidate], explicit: Sequence[str], policy: Policy
) -> tuple[list[str], dict[str, float]]:
    """Eligible blocks in the order the policy would keep them, and their fused scores."""
    s = inp.state
    pinned = set(s.pinned)
    score: dict[str, float] = {}
    for c in candidates:
        if c.block_id in s.blocks:
            score[c.block_id] = c.score
    for b in explicit:
        if b in s.blocks:
            score[b] = EXPLICIT_SCORE
    resident = [b for b in s.resident if b not in pinned]
    pool = set(score) | set(resident)
    # A tool call and its result are one unit: whichever is eligible brings
    # the other along, at the same rank.
    for b in list(pool):
        partner = tool_partner(s, b)
        if partner and partner in s.blocks and partner not in pool:
            pool.add(partner)
            score[partner] = score.get(b, 0.0)
    if policy == "lru":
        fresh = sorted((b for b in pool if b not in s.resident), key=lambda b: (-score[b], b))
        kept = sorted((b for b in pool if b in s.resident), key=lambda b: (-(score.get(b) == EXPLICIT_SCORE), -s.resident[b], b))
        return fresh + kept, score
    return sorted(pool, key=lambda b: (-score.get(b, 0.0), -s.resident.get(b, -1), b)), score


def _integrity(inp: PackInput, order: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Drop what would sit beside its own summary (whichever ranks lower goes).

    The conversation's recursive summary is always shown (at the head of
    Recent), so the messages it summarises stay out of Retrieved.
    """
    s = inp.state
    kept: list[str] = []
    blocked: dict[str, str] = {}
    taken: set[str] = {s.conversation_summary} if s.conversation_summary else set()
    for b in order:
        sources = s.summaries.get(b, ())
        summary = s.summarized_by.get(b)
        if b in taken or any(x in taken for x in sources) or (summary in taken and summary is not None):
            blocked[b] = "integrity"
            continue
        kept.append(b)
        taken.add(b)
    return kept, blocked


def select_resident(
    inp: PackInput,
    candidates: Sequence[Candidate],
    count: Callable[[str], int],
    *,
    explicit: Sequence[str] = (),
    policy: Policy = "score",
    table: Sequence[SectionSpec] = DEFAULT_TABLE,
    query: str = "",
) -> Selection:
    """Decide the resident set for `inp.state` given this turn's candidates.

    Whole blocks first, as the section table shares the budget out; then
    Retrieved is taken again in rank order with passages: a top-ranked page
    that does not fit whole is shown as its best passage for the terms of
    `query` (see :mod:`vmem.paging.passages`) rather than skipped for
    lower-ranked pages.
    """
    s = inp.state
    order, score = preference(inp, candidates, explicit, policy)
    order, blocked = _integrity(inp, order)
    items = section_items(inp, count, retrieved=order, recent=any(s.name == "Recent" for s in table))
    result = fill(items.by_section, inp.budget, count, table)
    keep = tuple(i.id for i in result.chosen.get("Retrieved", []))
    kept = set(keep)
    reasons = dict(blocked)
    for lo in items.left_out + result.left_out:
        if lo.section == "Retrieved":
            reasons.setdefault(lo.block_id, lo.reason)
    retrieved = result.chosen.get("Retrieved", [])
    room = sum(i.tokens for i in retrieved) + result.unused - (0 if retrieved else section_overhead("Retrieved", count))
    offered = items.by_section.get("Retrieved", [])
    chosen, passages = _with_passages(inp, offered, score, room, query, count)
    if passages:
        keep = tuple(chosen)
        kept = set(keep)
        for b in kept:
            reasons.pop(b, None)
        for b in passages:
            reasons[b] = "passage"
    by_id = {c.block_id: c for c in candidates}
    trace = []
    for b in sorted(set(score) | set(blocked) | set(reasons), key=lambda b: (-score.get(b, 0.0), b)):
        c = by_id.get(b)
        trace.append(
            CandidateTrace(
                block_id=b,
                fused=round(score.get(b, 0.0), 6),
                scores=dict(c.scores) if c is not None else {},
                chosen=b in kept,
                reason=reasons.get(b, "budget") if b not in kept or b in passages else "",
            )
        )
    pinned = set(s.pinned)
    load = tuple(b for b in keep if b not in s.resident or passages.get(b) != s.passages.get(b))
    evict = tuple(sorted((b for b in s.resident if b not in pinned and b not in kept), key=lambda b: (s.resident[b], b)))
    return Selection(keep=keep, load=load, evict=evict, trace=tuple(trace), passages=passages)


def _with_passages(
    inp: PackInput, offered: Sequence[Item], score: dict[str, float], room: int, query: str, count: Callable[[str], int],
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Retrieved again, in rank order, showing a passage of a top-ranked page that does not fit whole.

    Whole units are taken while they fit `room` (the tokens Retrieved used
    plus what the budget left unused); a page among the PASSAGE_RANKS best
    that does not fit is shown as its best passage instead of being skipped
    for lower-ranked pages.  The best page is cut only when it cannot fit
    whole; a later top page is taken whole only if that leaves a passage's
    worth (PASSAGE_TOKENS) for each top page still to show, and a passage
    gets an equal share of what is left.  Returns the blocks kept, in order,
    and the passages among them; no passages means the first fill stands.
    """
    if room < MIN_PASSAGE_TOKENS or not query:
        return [], {}
    units = item_units(offered)
    top = {u[0].id for u in units[:PASSAGE_RANKS] if len(u) == 1 and score.get(u[0].id, 0.0) > 0
           and u[0].id in inp.blocks and inp.blocks[u[0].id].kind == "page"}
    if not top:
        return [], {}  # no page to show in part: the first fill stands
    wanted = query_terms(query)
    chosen: list[str] = []
    passages: dict[str, tuple[int, int]] = {}
    # How many of the top pages the room should show: at least one, and one
    # per PASSAGE_TOKENS of room.  A top page is taken whole only if that
    # leaves a passage's worth for each of the others still to show.
    aim = min(len(top), max(1, room // PASSAGE_TOKENS))
    shown = 0
    for unit in units:
        cost = sum(i.tokens for i in unit)
        b = unit[0].id
        if b not in top:
            if cost <= room:
                chosen += [i.id for i in unit]
                room -= cost
            continue
        later = max(0, aim - shown - 1) if shown else 0  # the best page is cut only if it cannot fit whole
        if cost <= room - later * PASSAGE_TOKENS:
            chosen.append(b)
            room -= cost
            shown += 1
            continue
        if room < MIN_PASSAGE_TOKENS:
            continue
        span = best_passage(inp.blocks[b], wanted, room // (later + 1) - 1, count)
        if span is None:
            continue
        cost = block_item(inp, b, count, span).tokens
        if cost <= room:
            chosen.append(b)
            passages[b] = span
            room -= cost
            shown += 1
    return chosen, passages
