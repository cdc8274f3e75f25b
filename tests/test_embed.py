"""The Embedder protocol and the deterministic hashing embedder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from vmem.errors import UsageError
from vmem.retrieval.embed import Embedder, HashingEmbedder

TEXTS = [
    "The pager evicts the least recently used block when memory is tight.",
    "When memory is tight the pager evicts the least recently used block.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "Ünïcödé wörds, digits 42 and snake_case_names",
]


def _digest(matrix: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()


def test_is_an_embedder() -> None:
    e = HashingEmbedder()
    assert isinstance(e, Embedder)
    assert e.dim == 384
    assert e.id == "hashing-v1-blake2b/384"
    assert HashingEmbedder(64, char_trigrams=True).id == "hashing-v1-blake2b-c3/64"


@pytest.mark.parametrize("trigrams", [False, True])
def test_shape_dtype_and_unit_rows(trigrams: bool) -> None:
    e = HashingEmbedder(128, char_trigrams=trigrams)
    v = e.embed(TEXTS)
    assert v.shape == (len(TEXTS), 128)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    empty = e.embed([])
    assert empty.shape == (0, 128) and empty.dtype == np.float32


def test_texts_without_words_share_one_unit_vector() -> None:
    v = HashingEmbedder().embed(["", "  ", "?!…"])
    assert np.array_equal(v[0], v[1]) and np.array_equal(v[0], v[2])
    assert np.linalg.norm(v[0]) == pytest.approx(1.0)


def test_known_buckets_pin_the_scheme() -> None:
    # One word: one token, one bucket, whose index and sign come from BLAKE2b.
    # If this fails, the hashing changed and the embedder id's version must too.
    h = int.from_bytes(hashlib.blake2b(b"hello", digest_size=8).digest(), "little")
    v = HashingEmbedder(384).embed(["HELLO"])[0]
    (nonzero,) = np.nonzero(v)
    assert nonzero.tolist() == [h % 384]
    assert v[h % 384] == (-1.0 if h >> 63 else 1.0)


def test_batch_does_not_change_a_row() -> None:
    e = HashingEmbedder()
    together = e.embed(TEXTS)
    alone = np.vstack([e.embed([t]) for t in TEXTS])
    assert np.array_equal(together, alone)


def test_same_vectors_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import hashlib, json, sys, numpy as np\n"
        "from vmem.retrieval.embed import HashingEmbedder\n"
        "texts = json.loads(sys.stdin.read())\n"
        "for tri in (False, True):\n"
        "    v = HashingEmbedder(char_trigrams=tri).embed(texts)\n"
        "    print(hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())\n"
    )
    import json

    expected = [_digest(HashingEmbedder(char_trigrams=tri).embed(TEXTS)) for tri in (False, True)]
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(TEXTS), capture_output=True, text=True, env=env, check=True
        )
        assert out.stdout.split() == expected


def test_similar_texts_are_closer_than_dissimilar() -> None:
    e = HashingEmbedder()
    v = e.embed(TEXTS[:3])
    same_meaning = float(v[0] @ v[1])
    unrelated = float(v[0] @ v[2])
    assert same_meaning > 0.5
    assert same_meaning > unrelated + 0.4


def test_char_trigrams_tolerate_typos() -> None:
    plain, fuzzy = HashingEmbedder(), HashingEmbedder(char_trigrams=True)
    pair = ["retrieval of archived memory", "retreival of archvied memory"]
    p, f = plain.embed(pair), fuzzy.embed(pair)
    assert float(f[0] @ f[1]) > float(p[0] @ p[1]) + 0.1


def test_refuses_a_lone_string_and_non_strings() -> None:
    e = HashingEmbedder()
    with pytest.raises(UsageError, match="single string"):
        e.embed("a text")
    with pytest.raises(UsageError, match="item 1"):
        e.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(UsageError):
        HashingEmbedder(1)


def test_throughput_is_reported() -> None:
    words = "page block fault evict resident summary budget token context agent memory".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 10)) + f" item{i}" for i in range(5000)]
    e = HashingEmbedder()
    start = time.perf_counter()
    e.embed(texts)
    elapsed = time.perf_counter() - start
    print(f"\nHashingEmbedder: {len(texts) / elapsed:,.0f} short texts/s")
