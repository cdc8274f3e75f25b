"""The deterministic extractive compressor: keep the sentences that carry the most.

Scores each sentence by how many of the sources' frequent terms it holds,
keeps the best within about a tenth of the sources' tokens, and emits them in
their original order.  No model, no randomness: same pages, same summary.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from vmem.assembly.tokens import Tokenizer
from vmem.retrieval.bm25 import terms

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
RATIO = 10
MIN_TOKENS = 24
MAX_TOKENS = 400


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def extractive_summary(texts: Sequence[str], tokenizer: Tokenizer) -> str:
    """A summary of `texts` about 1/RATIO of their tokens, from their own sentences."""
    all_sentences = [s for t in texts for s in sentences(t) if not s.startswith("#")]
    if not all_sentences:
        return ""
    freq = Counter(term for s in all_sentences for term in set(terms(s)))
    total = sum(tokenizer.count(t) for t in texts)
    target = max(MIN_TOKENS, min(MAX_TOKENS, total // RATIO))
    scored = []
    for pos, s in enumerate(all_sentences):
        ts = set(terms(s))
        if not ts:
            continue
        score = sum(freq[t] for t in ts) / (len(ts) ** 0.5)
        scored.append((-score, pos, s))
    scored.sort()
    keep: list[tuple[int, str]] = []
    used = 0
    for _neg, pos, s in scored:
        n = tokenizer.count(s) + 1
        if used + n > target:
            continue
        keep.append((pos, s))
        used += n
    if not keep:  # every sentence is longer than the target: cut the best one
        _neg, pos, s = scored[0]
        keep = [(pos, tokenizer.decode(tokenizer.encode(s)[:target]))]
    return " ".join(s for _pos, s in sorted(keep))
