"""HashingEmbedder: the shared Embedder conformance suite, and the hashing scheme's own guarantees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import anyio
import numpy as np
import pytest
from conformance.embedder_suite import EmbedderConformance

from vmem.errors import UsageError
from vmem.retrieval.embed import HashingEmbedder

pytestmark = pytest.mark.anyio

TEXTS = [
    "The pager evicts the least recently used block when memory is tight.",
    "When memory is tight the pager evicts the least recently used block.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "Ünïcödé wörds, digits 42 and snake_case_names",
]


def _digest(matrix: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()


@pytest.fixture(params=[False, True], ids=["words", "trigrams"])
def embedder(request: pytest.FixtureRequest) -> HashingEmbedder:
    return HashingEmbedder(128, char_trigrams=request.param)


class TestHashingEmbedderConformance(EmbedderConformance):
    """The shared suite, with and without character trigrams, under asyncio and trio."""

    semantic = False


def test_ids_name_the_scheme_and_dimension() -> None:
    assert HashingEmbedder().dim == 384
    assert HashingEmbedder().id == "hashing-v1-blake2b/384"
    assert HashingEmbedder(64, char_trigrams=True).id == "hashing-v1-blake2b-c3/64"


async def test_texts_without_words_share_one_unit_vector() -> None:
    v = await HashingEmbedder().embed(["", "  ", "?!…"])
    assert np.array_equal(v[0], v[1]) and np.array_equal(v[0], v[2])
    assert np.linalg.norm(v[0]) == pytest.approx(1.0)


async def test_known_buckets_pin_the_scheme() -> None:
    # One word: one token, one bucket, whose index and sign come from BLAKE2b.
    # If this fails, the hashing changed and the embedder id's version must too.
    h = int.from_bytes(hashlib.blake2b(b"hello", digest_size=8).digest(), "little")
    v = (await HashingEmbedder(384).embed(["HELLO"]))[0]
    (nonzero,) = np.nonzero(v)
    assert nonzero.tolist() == [h % 384]
    assert v[h % 384] == (-1.0 if h >> 63 else 1.0)


async def test_batch_does_not_change_a_row_at_all() -> None:
    e = HashingEmbedder()
    together = await e.embed(TEXTS)
    alone = np.vstack([await e.embed([t]) for t in TEXTS])
    assert np.array_equal(together, alone)  # exactly: no float noise, unlike a model


def test_same_vectors_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import hashlib, json, sys, anyio, numpy as np\n"
        "from vmem.retrieval.embed import HashingEmbedder\n"
        "texts = json.loads(sys.stdin.read())\n"
        "for tri in (False, True):\n"
        "    v = anyio.run(HashingEmbedder(char_trigrams=tri).embed, texts)\n"
        "    print(hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest())\n"
    )
    import json

    expected = [_digest(anyio.run(HashingEmbedder(char_trigrams=tri).embed, TEXTS)) for tri in (False, True)]
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(TEXTS), capture_output=True, text=True, env=env, check=True
        )
        assert out.stdout.split() == expected


async def test_similar_texts_are_closer_than_dissimilar() -> None:
    e = HashingEmbedder()
    v = await e.embed(TEXTS[:3])
    same_meaning = float(v[0] @ v[1])
    unrelated = float(v[0] @ v[2])
    assert same_meaning > 0.5
    assert same_meaning > unrelated + 0.4


async def test_char_trigrams_tolerate_typos() -> None:
    plain, fuzzy = HashingEmbedder(), HashingEmbedder(char_trigrams=True)
    pair = ["retrieval of archived memory", "retreival of archvied memory"]
    p, f = await plain.embed(pair), await fuzzy.embed(pair)
    assert float(f[0] @ f[1]) > float(p[0] @ p[1]) + 0.1


def test_refuses_a_dimension_below_two() -> None:
    with pytest.raises(UsageError):
        HashingEmbedder(1)


async def test_a_large_batch_leaves_the_event_loop_running() -> None:
    words = "page block fault evict resident summary budget token context agent memory keeper".split()
    texts = [" ".join(f"{words[(i + j) % len(words)]}{j % 40}" for j in range(300)) for i in range(600)]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        start = time.perf_counter()
        v = await HashingEmbedder().embed(texts)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    assert v.shape == (600, 384)
    # Hashed on the loop's thread, the ticker would get at most one tick in,
    # however long the batch took (a count, not a timing: no flake under load).
    assert ticks >= 3, (ticks, elapsed)


async def test_throughput_is_reported() -> None:
    words = "page block fault evict resident summary budget token context agent memory".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 10)) + f" item{i}" for i in range(5000)]
    e = HashingEmbedder()
    start = time.perf_counter()
    await e.embed(texts)
    elapsed = time.perf_counter() - start
    print(f"\nHashingEmbedder: {len(texts) / elapsed:,.0f} short texts/s")
