"""Score fusion: many retrievers' rankings in, one ranking out.

Each retriever's scores are normalised to [0, 1] by dividing by that
retriever's best score for the query (negative scores count as 0), so a
retriever's scale does not matter, only how a block compares with its best.
Scores that already have a fixed scale (cosine similarity: "vector") are
taken as they are, so a query that nothing matches well does not have its
best weak match counted as a full hit.
The fused score is the weighted sum of the normalised scores.  The weights
are the fusion policy, below; ties are broken by block id.

Why these weights: lexical (BM25) and semantic (vector) evidence are equally
trusted; a graph neighbour of a strong hit is worth half a direct hit (the
turn that answers a question often shares no word with it, but follows the
turn that does: measured on LoCoMo, 0.5 gains at every budget from 1,024
tokens on and is even at 512; 0.25 left most of that on the table, 0.75 and
more crowd direct hits out of small budgets); recency only breaks near-ties; a plugin
counts as much as BM25 unless its weight is set.  With the feature-hashing
embedder, "vector" is itself a bag-of-words signal, mostly redundant with
BM25 and noisier, so `for_embedder` lowers its weight to 0.3.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import msgspec

from vmem.schemas.messages import Candidate

LEXICAL_VECTOR_WEIGHT = 0.3


class FusionPolicy(msgspec.Struct, frozen=True):
    weights: dict[str, float] = msgspec.field(
        default_factory=lambda: {"bm25": 1.0, "vector": 1.0, "graph": 0.5, "recency": 0.05}
    )
    default_weight: float = 1.0
    # Retrievers whose scores already lie on a fixed scale of [0, 1] (the
    # cosine similarity of unit vectors): taken as they are, not divided by the
    # query's best, so that a query nothing matches well does not promote its
    # best weak match to a full score.
    absolute: frozenset[str] = frozenset({"vector"})

    def weight(self, retriever: str) -> float:
        return self.weights.get(retriever, self.default_weight)

    def for_embedder(self, semantic: bool) -> "FusionPolicy":
        """This policy, with the vector weight lowered when vectors are not semantic."""
        if semantic:
            return self
        return msgspec.structs.replace(
            self, weights={**self.weights, "vector": min(self.weight("vector"), LEXICAL_VECTOR_WEIGHT)})


DEFAULT_POLICY = FusionPolicy()


def normalise(hits: Sequence[tuple[str, float]], absolute: bool = False) -> dict[str, float]:
    """Scores in [0, 1]: divided by the best (or, for a fixed-scale score, clipped), negatives as 0."""
    if absolute:
        return {b: min(1.0, s) for b, s in hits if s > 0}
    top = max((s for _b, s in hits), default=0.0)
    if top <= 0:
        return {}
    return {b: max(0.0, s) / top for b, s in hits}


def fuse(
    per_retriever: Mapping[str, Sequence[tuple[str, float]]],
    limit: int,
    policy: FusionPolicy = DEFAULT_POLICY,
) -> list[Candidate]:
    """Fuse per-retriever (block id, score) lists into candidates, best first."""
    fused: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    for name in sorted(per_retriever):
        w = policy.weight(name)
        for bid, norm in normalise(per_retriever[name], name in policy.absolute).items():
            fused[bid] = fused.get(bid, 0.0) + w * norm
            parts.setdefault(bid, {})[name] = round(norm, 6)
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [Candidate(bid, round(score, 6), parts[bid]) for bid, score in ranked]
