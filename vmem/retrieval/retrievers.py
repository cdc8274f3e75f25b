"""Retrievers: the plugin interface and the built-ins that need no index.

A retriever is anything with a ``name`` and an async ``search(query, ctx)``
returning ``(block_id, score)`` pairs, higher is better.  The retriever actor
runs every retriever of a query concurrently, each under a timeout; one that
fails or times out is recorded in the reply and left out of the fusion, not
fatal.  A plugin must not block the event loop: do heavy work in a thread.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import msgspec

from vmem.state.fold import State
from vmem.storage.block_store import BlockStore


class RetrievalQuery(msgspec.Struct, frozen=True):
    ns: str
    text: str
    limit: int
    kinds: frozenset[str]


class RetrievalContext(msgspec.Struct, frozen=True):
    """What a retriever may read: the namespace's state and its block store, and the blocks not to return."""

    state: State
    store: BlockStore
    exclude: frozenset[str] = frozenset()

    def eligible(self, bid: str, kinds: frozenset[str]) -> bool:
        """Whether `bid` may be returned: a block of the namespace, of one of `kinds`, not excluded."""
        meta = self.state.blocks.get(bid)
        return meta is not None and meta.kind in kinds and bid not in self.exclude


@runtime_checkable
class Retriever(Protocol):
    name: str

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext) -> Sequence[tuple[str, float]]: ...


class RecencyRetriever:
    """The newest eligible blocks, scored by rank (newest 1.0)."""

    name = "recency"

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext) -> list[tuple[str, float]]:
        out: list[str] = []
        order = ctx.state.order
        # Walk back from the newest; bounded by the limit, not the store size,
        # except when few blocks are eligible.
        for bid in reversed(order):
            if ctx.eligible(bid, query.kinds):
                out.append(bid)
                if len(out) >= query.limit:
                    break
        n = len(out)
        return [(b, (n - i) / n) for i, b in enumerate(out)]


def graph_neighbours(state: State, seeds: Sequence[tuple[str, float]], kinds: frozenset[str], limit: int) -> list[tuple[str, float]]:
    """Blocks one typed edge away from strong hits, scored by the hit's score.

    Edges followed both ways: a page's predecessor and successor (`follows`),
    a tool call and its result (`result_of`), a summary and its sources
    (`summarizes`).  A hit is its own neighbour: the boost goes to its
    neighbourhood, hit included, so a page next to the best hit never
    overtakes that hit on the strength of the hit alone.
    """
    best: dict[str, float] = {}
    for bid, score in seeds:
        meta = state.blocks.get(bid)
        if meta is not None and meta.kind in kinds and score > best.get(bid, 0.0):
            best[bid] = score
        for _kind, other in [*state.edges.get(bid, ()), *state.edges_in.get(bid, ())]:
            meta = state.blocks.get(other)
            if meta is None or meta.kind not in kinds:
                continue
            if score > best.get(other, 0.0):
                best[other] = score
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
