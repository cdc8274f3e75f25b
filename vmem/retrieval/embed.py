"""Embedders: text to unit vectors, and the deterministic default.

An :class:`Embedder` turns texts into L2-normalised float32 rows, awaited:
a remote one waits on the network and a local model computes for a while, so
neither may hold up the event loop.  Its :attr:`~Embedder.id` names the
model, its version and its dimension; vectors are cached and indexed per
(block id, embedder id), so two embedders whose vectors are not
interchangeable must never share an id.  :attr:`~Embedder.semantic` says
whether nearness means likeness of meaning (retrieval weighs the vector
retriever by it).  ``tests/conformance/embedder_suite.py`` is what every
embedder must pass.

:class:`HashingEmbedder` is the default: feature hashing of words, word pairs
and (optionally) character trigrams.  It needs no model and no network, and
gives the same vector for the same text on every machine and in every
process.  It captures lexical overlap, not meaning; use the MiniLM or the HTTP
embedder for semantic recall.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio.to_thread

from vmem.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Embedder", "HashingEmbedder", "check_texts", "normalize_rows"]

# Words are runs of Unicode letters, digits and underscores.  Bigram tokens
# contain a space and trigram tokens start with "#", neither of which a word
# can, so the three kinds never hash as one another.
_WORD = re.compile(r"\w+")
# The token of a text with no words, so that every row has unit norm and all
# empty texts share one vector.
_EMPTY_TOKEN = "\x00empty"
# Bound on the token -> bucket memo; when full it is cleared (results do not
# depend on it, only speed does).
_MEMO_LIMIT = 1 << 18
# Hashing gets through about 10 MB of text a second (a sync batch of 1024
# pages takes 0.3 s).  Up to this many characters (~5 ms) it runs on the
# event loop's thread, where a thread hop would cost more than it saves;
# beyond, in a worker thread, so that the loop's other tasks keep running.
_INLINE_CHARS = 50_000


@runtime_checkable
class Embedder(Protocol):
    """What vmem needs from an embedder: texts in, unit vectors out."""

    @property
    def id(self) -> str:
        """Stable identifier of model, version and dimension; a cache key."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    @property
    def semantic(self) -> bool:
        """True when near vectors mean similar meaning (a trained model), False for lexical hashing."""
        ...

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts`: float32, shape (len(texts), dim), rows of unit L2 norm, in input order.

        The same texts give the same vectors.  A lone string, or an item that
        is not a string, is a :class:`~vmem.errors.UsageError`.
        """
        ...

    async def aclose(self) -> None:
        """Release what the embedder holds (connections); idempotent, and a later embed reopens it."""
        ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, refusing a lone string (which would embed each character)."""
    if isinstance(texts, str):
        raise UsageError("embed() takes a sequence of texts, not a single string: pass [text]")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise UsageError(f"embed() texts must be str; item {i} is {type(text).__name__}")
    return out


def normalize_rows(matrix: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """`matrix` as float32 with each row scaled to unit L2 norm (zero rows stay zero)."""
    import numpy as np

    # Norms in float64: float32 sums of squares lose digits for long rows.
    m = np.asarray(matrix, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", m, m))
    norms[norms == 0.0] = 1.0
    return (m / norms[:, None]).astype(np.float32)


class HashingEmbedder:
    """Deterministic feature-hashing embedder: no model, no network.

    Tokens are the lowercased words of a text, its adjacent word pairs and,
    with ``char_trigrams=True``, the character trigrams of each word (with
    ``<`` and ``>`` marking its ends, as fastText does).  Each distinct token
    is hashed with BLAKE2b (stable across processes and machines, unlike
    :func:`hash`) into one of `dim` buckets with a sign taken from another bit
    of the hash, so collisions cancel on average instead of piling up.  A
    token seen ``tf`` times weighs ``1 + ln(tf)``.  Rows are L2-normalised; a
    text with no words maps to one fixed unit vector.
    """

    def __init__(self, dim: int = 384, *, char_trigrams: bool = False) -> None:
        if dim < 2:
            raise UsageError(f"HashingEmbedder dim must be at least 2, got {dim}")
        self._dim = dim
        self._trigrams = char_trigrams
        # The "v1" names this tokenisation and hashing scheme: change either
        # and the version must change, or cached vectors would be mixed.
        self._id = f"hashing-v1-blake2b{'-c3' if char_trigrams else ''}/{dim}"
        self._memo: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self._dim}, char_trigrams={self._trigrams})"

    @property
    def id(self) -> str:
        """E.g. ``hashing-v1-blake2b/384``; ``-c3`` marks character trigrams."""
        return self._id

    @property
    def dim(self) -> int:
        """Number of hash buckets, the vector length."""
        return self._dim

    @property
    def semantic(self) -> bool:
        """False: shared words, not shared meaning, make vectors near."""
        return False

    async def aclose(self) -> None:
        """Nothing to release."""

    def _code(self, token: str) -> int:
        # Bucket in the low bits modulo dim, sign from the top bit; encoded as
        # one int (bucket, or ~bucket for a negative sign) to keep the memo small.
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        bucket = h % self._dim
        return ~bucket if h >> 63 else bucket

    def _tokens(self, text: str) -> Counter[str]:
        words = _WORD.findall(text.lower())
        counts = Counter(words)
        if len(words) > 1:
            counts.update([a + " " + b for a, b in zip(words, words[1:])])
        if self._trigrams:
            for word, tf in list(Counter(words).items()):
                padded = "<" + word + ">"
                for i in range(len(padded) - 2):
                    counts["#" + padded[i : i + 3]] += tf
        if not counts:
            counts[_EMPTY_TOKEN] = 1
        return counts

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts`: float32, shape (len(texts), dim), unit rows."""
        import numpy as np

        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        if sum(map(len, items)) <= _INLINE_CHARS:
            return self._matrix(items)
        return await anyio.to_thread.run_sync(self._matrix, items)

    def _matrix(self, items: list[str]) -> npt.NDArray[np.float32]:
        # May run in worker threads at once: the memo is only read and
        # written key by key (atomic under the GIL), never iterated.
        import numpy as np

        n = len(items)
        memo = self._memo
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        rows: list[int] = []
        codes: list[int] = []
        tfs: list[int] = []
        for row, text in enumerate(items):
            counts = self._tokens(text)
            for token, tf in counts.items():
                code = memo.get(token)
                if code is None:
                    code = memo[token] = self._code(token)
                codes.append(code)
                tfs.append(tf)
            rows.extend([row] * len(counts))
        # One scatter-add for the whole batch: the Python loop above only
        # collects (row, bucket, sign, tf); all arithmetic is vectorised.
        code_arr = np.asarray(codes, dtype=np.int64)
        negative = code_arr < 0
        buckets = np.where(negative, ~code_arr, code_arr)
        weights = 1.0 + np.log(np.asarray(tfs, dtype=np.float64))
        weights[negative] = -weights[negative]
        flat = np.asarray(rows, dtype=np.int64) * self._dim + buckets
        matrix = np.bincount(flat, weights=weights, minlength=n * self._dim).astype(np.float64, copy=False)
        matrix = matrix.reshape(n, self._dim)
        # Cancelling signs can zero a short text's row; fall back to the
        # empty-text vector so the unit-norm contract holds.
        zero = ~matrix.any(axis=1)
        if zero.any():
            empty = self._code(_EMPTY_TOKEN)
            matrix[zero, ~empty if empty < 0 else empty] = -1.0 if empty < 0 else 1.0
        return normalize_rows(matrix)
