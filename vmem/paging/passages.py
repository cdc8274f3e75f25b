"""The best passage of a page for a query, when the whole page does not fit.

A passage is a run of whole lines and sentences of the page's text, chosen
to hold the query's distinct terms, each weighted by how few of the page's
lines and sentences hold it, as fit in the room left (more occurrences break
ties, then the earlier span).  Lexical and deterministic:
the pager decides it from the state, the page's text and the query alone, so
replay decides the same span; the span's character offsets are recorded in
the page-load event and the packer renders exactly that span.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection

from vmem.assembly.render import render_passage
from vmem.retrieval.bm25 import terms
from vmem.schemas.events import BlockWritten

# Smaller than this, a passage is too short to answer anything from.
MIN_PASSAGE_TOKENS = 48
# A line or sentence ends a unit: passages start and end on these boundaries.
_UNIT_END = re.compile(r"(?<=[.!?])[ \t]+|\n+")


def text_units(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the page's lines and sentences, in order, blanks left out."""
    out: list[tuple[int, int]] = []
    start = 0
    for m in _UNIT_END.finditer(text):
        if text[start:m.start()].strip():
            out.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        out.append((start, len(text)))
    return out


def best_passage(
    block: BlockWritten, query_terms: Collection[str], room: int, count: Callable[[str], int]
) -> tuple[int, int] | None:
    """The span of `block`'s text whose rendered passage fits `room` tokens and best matches the query.

    None when no unit of the text holds a query term, or not even one unit
    fits (or `room` is under MIN_PASSAGE_TOKENS).
    """
    wanted = frozenset(query_terms)
    if room < MIN_PASSAGE_TOKENS or not wanted:
        return None
    spans = text_units(block.text)
    if not spans:
        return None
    found = [[t for t in terms(block.text[a:b]) if t in wanted] for a, b in spans]
    if not any(found):
        return None
    # A query term found in few of the page's units says more about where the
    # answer is than one found all over it (the page's own inverse frequency).
    df = Counter(t for f in found for t in set(f))
    weight = {t: math.log(1 + len(spans) / n) for t, n in df.items()}
    overhead = count(render_passage(block, spans[0][0], spans[0][0]))
    sizes = [count(block.text[a:b]) + 1 for a, b in spans]
    # Windows start on a unit holding a query term and take the units after
    # it while they fit; the best holds the most weight of distinct terms.
    best: tuple[float, int, int] | None = None  # (weight, occurrences, -first unit)
    best_span: tuple[int, int] | None = None
    end = 0
    used = overhead  # overhead + sizes[first:end]
    for first in range(len(spans)):
        if end <= first:
            end, used = first, overhead
        while end < len(spans) and used + sizes[end] <= room:
            used += sizes[end]
            end += 1
        if end > first:
            if found[first]:
                window = [t for f in found[first:end] for t in f]
                key = (round(sum(weight[t] for t in set(window)), 9), len(window), -first)
                if best is None or key > best:
                    best, best_span = key, (first, end)
            used -= sizes[first]
    if best_span is None:
        return None
    first, end = best_span
    # The estimate adds counts of parts; the rendered passage is counted exactly
    # and cut back from the end until it fits.
    while end > first:
        span = (spans[first][0], spans[end - 1][1])
        if count(render_passage(block, *span)) <= room:
            return span
        end -= 1
    return None
