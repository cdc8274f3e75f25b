"""VectorIndex: persistence keyed by log sequence, idempotence, deterministic order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vmem.retrieval.embed import HashingEmbedder
from vmem.retrieval.vectors import VectorIndex, VectorIndexError

DIM = 32
EMBEDDER = "test/32"


def random_unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ids(n: int, prefix: str = "b") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def open_index(path: Path, **kwargs) -> VectorIndex:
    return VectorIndex.open(path, dim=DIM, embedder_id=EMBEDDER, **kwargs)


def test_round_trip_save_and_open(tmp_path: Path) -> None:
    vectors = random_unit(300)
    index = open_index(tmp_path / "vi")
    assert len(index) == 0 and index.through_seq == 0
    assert index.add(ids(300), vectors) == 300
    queries = random_unit(5, seed=1)
    before = [index.search(q, 10) for q in queries]
    index.save(through_seq=41)

    reopened = open_index(tmp_path / "vi")
    assert len(reopened) == 300 and reopened.through_seq == 41
    assert [reopened.search(q, 10) for q in queries] == before
    assert "b00007" in reopened and "nope" not in reopened
    stored = reopened.get("b00007")
    assert stored is not None and stored.dtype == np.float32
    assert float(stored @ vectors[7]) / float(np.linalg.norm(stored)) > 0.9999  # float16-rounded
    assert reopened.get("nope") is None


def test_search_after_reopen_then_add_and_save_again(tmp_path: Path) -> None:
    vectors = random_unit(120)
    index = open_index(tmp_path)
    index.add(ids(100), vectors[:100])
    index.save(10)
    index = open_index(tmp_path)
    assert index.search(vectors[50], 1)[0][0] == "b00050"
    assert index.add(ids(120), vectors) == 20  # the first 100 are already there
    index.save(12)
    index = open_index(tmp_path)
    assert len(index) == 120 and index.through_seq == 12
    assert index.search(vectors[110], 1)[0][0] == "b00110"
    # Only the current generation is kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "g-00000002"]


def test_add_is_idempotent(tmp_path: Path) -> None:
    vectors = random_unit(10)
    index = open_index(tmp_path)
    assert index.add(ids(10), vectors) == 10
    original = index.get("b00003")
    assert index.add(ids(10), random_unit(10, seed=9)) == 0  # re-adding an id changes nothing
    assert len(index) == 10
    assert np.array_equal(index.get("b00003"), original)
    # Duplicates inside one call count once (the first vector wins).
    assert index.add(["x", "x"], random_unit(2, seed=3)) == 1
    assert len(index) == 11
    assert index.missing(["b00001", "y", "x", "y", "z"]) == ["y", "z"]


def test_exclude_leaves_blocks_out_without_shrinking_the_result(tmp_path: Path) -> None:
    vectors = random_unit(50)
    index = open_index(tmp_path)
    index.add(ids(50), vectors)
    top = index.search(vectors[0], 5, exact=True)
    assert top[0] == ("b00000", pytest.approx(1.0, abs=1e-3))
    excluded = [bid for bid, _ in top[:3]] + ["not-in-index"]
    rest = index.search(vectors[0], 5, exclude=excluded, exact=True)
    assert len(rest) == 5
    assert not {bid for bid, _ in rest} & set(excluded)
    assert rest[:2] == top[3:]


def test_results_sorted_by_similarity_then_id(tmp_path: Path) -> None:
    base = random_unit(1, seed=5)[0]
    other = random_unit(20, seed=6)
    tied = [f"t{c}" for c in "qwertyuiop"]  # ten blocks with the same vector, added out of order
    index_a = open_index(tmp_path / "a")
    index_a.add(tied, np.tile(base, (10, 1)))
    index_a.add(ids(20), other)
    index_b = open_index(tmp_path / "b")  # same content, another insertion order
    index_b.add(ids(20)[::-1], other[::-1])
    index_b.add(tied[::-1], np.tile(base, (10, 1)))
    for index in (index_a, index_b):
        hits = index.search(base, 4)
        assert [bid for bid, _ in hits] == sorted(tied)[:4]
        full = index.search(base, 30)
        keys = [(-score, bid) for bid, score in full]
        assert keys == sorted(keys)
    assert index_a.search(base, 30, exact=True) == index_b.search(base, 30, exact=True)


def test_same_additions_build_the_same_bytes(tmp_path: Path) -> None:
    vectors = random_unit(400, seed=2)
    for name in ("one", "two"):
        index = open_index(tmp_path / name)
        index.add(ids(400), vectors)
        index.save(1)
    one = (tmp_path / "one" / "g-00000001" / "index.usearch").read_bytes()
    two = (tmp_path / "two" / "g-00000001" / "index.usearch").read_bytes()
    assert one == two


def test_default_search_does_not_depend_on_the_index_history(tmp_path: Path) -> None:
    # The HNSW graph differs when a reopen happens between additions; the
    # default (exact below exact_limit) search must not, or replaying a
    # decision after a restart could pick other blocks.
    vectors, queries = random_unit(1500, seed=11), random_unit(40, seed=12)
    straight = open_index(tmp_path / "straight")
    straight.add(ids(1500), vectors)
    interrupted = open_index(tmp_path / "interrupted")
    interrupted.add(ids(700), vectors[:700])
    interrupted.save(1)
    interrupted = open_index(tmp_path / "interrupted")
    interrupted.add(ids(1500), vectors)
    for q in queries:
        assert straight.search(q, 20) == interrupted.search(q, 20)
    approximate = open_index(tmp_path / "interrupted", exact_limit=0)
    assert len(approximate.search(queries[0], 20)) == 20  # the graph is used past the limit


def test_through_seq_persists_without_rewriting_the_index(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    index.add(ids(5), random_unit(5))
    index.save(3)
    written = (tmp_path / "g-00000001" / "index.usearch").stat().st_mtime_ns
    index.save(9)  # no new vectors: only CURRENT changes
    assert (tmp_path / "g-00000001" / "index.usearch").stat().st_mtime_ns == written
    assert open_index(tmp_path).through_seq == 9
    with pytest.raises(VectorIndexError, match="go back"):
        index.save(8)
    empty = open_index(tmp_path / "empty")
    empty.save(0)
    assert len(open_index(tmp_path / "empty")) == 0


def test_a_crashed_save_leaves_the_last_good_generation(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    index.add(ids(20), random_unit(20))
    index.save(5)
    # A save that died after writing part of generation 2, before switching CURRENT.
    partial = tmp_path / "g-00000002"
    partial.mkdir()
    (partial / "index.usearch").write_bytes(b"half a file")
    (tmp_path / "CURRENT.tmp").write_bytes(b"{")
    reopened = open_index(tmp_path)
    assert len(reopened) == 20 and reopened.through_seq == 5
    reopened.add(["new"], random_unit(1, seed=7))
    reopened.save(6)
    assert len(open_index(tmp_path)) == 21


def test_refuses_another_embedder_or_a_damaged_index(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    index.add(ids(3), random_unit(3))
    index.save(1)
    with pytest.raises(VectorIndexError, match="embedder"):
        VectorIndex.open(tmp_path, dim=DIM, embedder_id="other/32")
    with pytest.raises(VectorIndexError, match="embedder"):
        VectorIndex.open(tmp_path, dim=16, embedder_id=EMBEDDER)
    os.remove(tmp_path / "g-00000001" / "ids.msgpack")
    with pytest.raises(VectorIndexError, match="delete"):
        open_index(tmp_path)
    (tmp_path / "CURRENT").write_bytes(b"not json")
    with pytest.raises(VectorIndexError, match="damaged"):
        open_index(tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    assert index.search(random_unit(1)[0], 5) == []  # empty index
    index.add(ids(3), random_unit(3))
    assert index.search(random_unit(1)[0], 0) == []
    with pytest.raises(VectorIndexError, match="shape"):
        index.add(["a"], random_unit(2))
    with pytest.raises(VectorIndexError, match="non-zero"):
        index.add(["a"], np.zeros((1, DIM)))
    with pytest.raises(VectorIndexError, match="length"):
        index.search(np.ones(DIM + 1), 3)
    with pytest.raises(VectorIndexError, match="dtype"):
        VectorIndex.open(tmp_path / "x", dim=DIM, embedder_id=EMBEDDER, dtype="i8")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_with_the_hashing_embedder(tmp_path: Path) -> None:
    embedder = HashingEmbedder(128)
    texts = {
        "b-pager": "the pager evicts cold blocks under memory pressure",
        "b-bm25": "tantivy ranks documents with bm25",
        "b-cook": "bake the bread for forty minutes",
    }
    index = VectorIndex.open(tmp_path, dim=embedder.dim, embedder_id=embedder.id, dtype="f32")
    todo = index.missing(texts)
    index.add(todo, await embedder.embed([texts[b] for b in todo]))
    assert index.missing(texts) == []
    (query,) = await embedder.embed(["which blocks does the pager evict"])
    assert index.search(query, 1)[0][0] == "b-pager"
