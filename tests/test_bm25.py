"""Tests of vmem.retrieval.bm25: the tantivy BM25 index cache and the in-memory bm25_rank."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tantivy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.errors import UsageError, VmemError
from vmem.retrieval.bm25 import _SIDECAR, Bm25Index, IndexBusy, bm25_rank, terms

DOCS = [
    ("b1", "The quick brown fox jumps over the lazy dog"),
    ("b2", "Paging blocks of context in and out of the model window"),
    ("b3", "A lazy afternoon: the dog sleeps, the fox watches"),
    ("b4", "Event logs are the source of truth; indexes are caches"),
]

# Query syntax, unicode, control characters and lone surrogates: none may reach
# tantivy's query parser or break the Rust boundary.
ANY_TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=80),
    st.lists(
        st.sampled_from(['"', ":", "(", ")", "AND", "OR", "NOT", "-", "+", "*", "~", "^", "[", "TO", "]",
                         "{", "}", "\\", "text:", "block_id:", "fox", "dog", "ÉCOLE", "東京", " ", "\x00"]),
        max_size=12,
    ).map("".join),
)


def _open_with(path: Path, docs: list[tuple[str, str]], through_seq: int = 1) -> Bm25Index:
    ix = Bm25Index.open(path)
    for block_id, text in docs:
        ix.add(block_id, text)
    ix.commit(through_seq)
    return ix


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bm25Index]:
    with _open_with(tmp_path_factory.mktemp("bm25"), DOCS, len(DOCS)) as ix:
        yield ix


def _assert_ordered(results: list[tuple[str, float]], limit: int) -> None:
    assert len(results) <= max(limit, 0)
    assert len({b for b, _ in results}) == len(results)
    assert results == sorted(results, key=lambda r: (-r[1], r[0]))
    assert all(isinstance(b, str) and isinstance(s, float) and s > 0 for b, s in results)


# --- the index ------------------------------------------------------------


def test_new_index_is_empty(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path / "new") as ix:
        assert ix.through_seq == 0
        assert ix.doc_count == 0
        assert ix.search("anything", 5) == []
        assert not ix.has_writer  # opening takes no lock


def test_relevance(shared: Bm25Index) -> None:
    assert shared.search("paging context window", 10)[0][0] == "b2"
    # Stemming: "logging" and "cached" reach "logs" and "caches".
    assert shared.search("logging cached", 10)[0][0] == "b4"
    top = shared.search("lazy dog", 10)
    assert {b for b, _ in top} == {"b1", "b3"}
    assert shared.search("zebra", 10) == []


def test_limit(shared: Bm25Index) -> None:
    assert len(shared.search("the", 2)) == 2
    assert shared.search("the fox", 0) == []
    assert shared.search("the fox", -3) == []


def test_query_syntax_is_plain_text(shared: Bm25Index) -> None:
    # Parsed as syntax, these would be a field query, a phrase, or an error.
    assert shared.search("block_id:b1", 10) == shared.search("block id b1", 10)
    assert shared.search('"lazy dog" AND (fox', 10) == shared.search("lazy dog and fox", 10)
    assert shared.search("", 10) == []
    assert shared.search(" :() \"' -- ", 10) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=ANY_TEXT, limit=st.integers(-1, 6))
def test_any_query_never_raises(shared: Bm25Index, query: str, limit: int) -> None:
    results = shared.search(query, limit)
    _assert_ordered(results, limit)
    if not terms(query):
        assert results == []


def test_idempotent_add(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path) as ix:
        ix.add("b1", "old words about apples")
        ix.add("b1", "newer words about pears")  # same batch
        ix.commit(1)
        assert ix.doc_count == 1
        assert ix.search("apples", 10) == []
        assert [b for b, _ in ix.search("pears", 10)] == ["b1"]
        ix.add("b1", "newest words about plums")  # across commits
        ix.commit(2)
        assert ix.doc_count == 1
        assert ix.search("pears", 10) == []
        assert [b for b, _ in ix.search("plums words", 10)] == ["b1"]


def test_adds_are_invisible_until_commit(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path) as ix:
        ix.add("b1", "pending text")
        assert ix.search("pending", 10) == []
        ix.commit(7)
        assert [b for b, _ in ix.search("pending", 10)] == ["b1"]


def test_through_seq_and_docs_persist_across_reopen(tmp_path: Path) -> None:
    with _open_with(tmp_path, DOCS, 42) as ix:
        before = ix.search("lazy fox", 10)
        assert ix.through_seq == 42
    with Bm25Index.open(tmp_path) as ix:
        assert ix.through_seq == 42
        assert ix.doc_count == len(DOCS)
        assert ix.search("lazy fox", 10) == before


def test_close_drops_uncommitted_adds(tmp_path: Path) -> None:
    with _open_with(tmp_path, DOCS[:1], 1) as ix:
        ix.add("b9", "never committed")
    with Bm25Index.open(tmp_path) as ix:
        assert ix.doc_count == 1
        assert ix.through_seq == 1


def test_through_seq_cannot_go_backwards(tmp_path: Path) -> None:
    with _open_with(tmp_path, DOCS, 10) as ix:
        ix.commit(10)  # same sequence again: allowed, nothing new
        with pytest.raises(UsageError, match="behind"):
            ix.commit(9)
        assert ix.through_seq == 10


def test_index_ahead_of_sidecar_recovers_by_replay(tmp_path: Path) -> None:
    # A crash between tantivy's commit and the sidecar write leaves the docs
    # but loses the sequence; replaying from 0 must not duplicate anything.
    with _open_with(tmp_path, DOCS, 4):
        pass
    (tmp_path / _SIDECAR).unlink()
    with Bm25Index.open(tmp_path) as ix:
        assert ix.through_seq == 0
        for block_id, text in DOCS:
            ix.add(block_id, text)
        ix.commit(4)
        assert ix.doc_count == len(DOCS)
    (tmp_path / _SIDECAR).write_text("garbage")
    with Bm25Index.open(tmp_path) as ix:
        assert ix.through_seq == 0


def test_deterministic_tie_order_across_segments(tmp_path: Path) -> None:
    # Identical texts score identically.  Add them in descending id order over
    # several commits (several segments), so tantivy's own tie order (by
    # document address) disagrees with block-id order, also at the cut-off.
    ids = [f"blk{i:02d}" for i in range(30)]
    with Bm25Index.open(tmp_path) as ix:
        for n, block_id in enumerate(reversed(ids), start=1):
            ix.add(block_id, "same tied text")
            if n % 7 == 0:
                ix.commit(n)
        ix.add("other", "text only once, and much longer than the tied ones")
        ix.commit(len(ids) + 1)
        for limit in (1, 5, 29, 30, 31, 100):
            results = ix.search("tied text", limit)
            expected = ids[: min(limit, len(ids))]
            assert [b for b, _ in results][: len(expected)] == expected
            assert len({s for b, s in results if b != "other"}) == 1
            _assert_ordered(results, limit)
        assert ix.search("tied text", 10) == ix.search("text tied tied TEXT", 10)


def test_same_process_second_handle_cannot_write(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path) as writer, Bm25Index.open(tmp_path) as reader:
        writer.add("b1", "written by the holder")
        assert writer.has_writer
        assert reader.try_acquire_writer() is False
        with pytest.raises(IndexBusy, match="leave indexing to it") as err:
            reader.add("b2", "refused")
        assert isinstance(err.value, VmemError)
        with pytest.raises(IndexBusy):
            reader.commit(5)
        writer.commit(3)
        # Readers see another handle's commit, and its sequence, after refresh.
        assert reader.through_seq == 0
        reader.refresh()
        assert reader.through_seq == 3
        assert [b for b, _ in reader.search("holder", 10)] == ["b1"]
        writer.close()
        assert reader.try_acquire_writer() is True
        reader.add("b2", "now accepted")
        reader.commit(4)
        assert reader.doc_count == 2


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vmem.retrieval.bm25 import Bm25Index, IndexBusy

    ix = Bm25Index.open(Path(sys.argv[1]))
    if sys.argv[2] == "write":
        ix.add("child", "written by the child process")
        ix.commit(5)
        print("committed")
    else:
        print("acquired" if ix.try_acquire_writer() else "busy")
        try:
            ix.add("child2", "refused")
        except IndexBusy as exc:
            print("IndexBusy:", exc.message)
    ix.close()
    """
)


def _child(path: Path, mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_other_process_cannot_write_while_held(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path) as ix:
        # A child that holds the writer, commits and exits hands the lock back.
        assert _child(tmp_path, "write").strip() == "committed"
        ix.refresh()
        assert ix.through_seq == 5
        assert [b for b, _ in ix.search("child", 10)] == ["child"]
        assert ix.try_acquire_writer()
        out = _child(tmp_path, "try").splitlines()
        assert out[0] == "busy"
        assert out[1].startswith("IndexBusy: the BM25 index at")


def test_closed_handle_refuses_writes(tmp_path: Path) -> None:
    ix = Bm25Index.open(tmp_path)
    ix.close()
    ix.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        ix.add("b1", "x")


def test_surrogates_in_text_are_indexed(tmp_path: Path) -> None:
    with Bm25Index.open(tmp_path) as ix:
        ix.add("b1", "broken \udcff bytes inside")
        ix.commit(1)
        assert [b for b, _ in ix.search("bytes \udcff", 10)] == ["b1"]


@settings(max_examples=60, deadline=None)
@given(text=ANY_TEXT)
def test_terms_match_en_stem(text: str) -> None:
    # Query terms must be exactly what the index holds, or term queries miss.
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("text", tokenizer_name="en_stem", index_option="freq")
    index = tantivy.Index(builder.build())  # in memory
    writer = index.writer(heap_size=15_000_000, num_threads=1)
    doc = tantivy.Document()
    doc.add_text("text", text.encode("utf-8", "replace").decode("utf-8"))
    writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    indexed = {t for t, _ in index.searcher().terms_with_prefix("text", "")}
    assert indexed == set(terms(text))


# --- bm25_rank ------------------------------------------------------------


def test_bm25_rank_relevance_and_ties() -> None:
    ranked = bm25_rank("lazy dog", DOCS, 10)
    assert {b for b, _ in ranked} == {"b1", "b3"}
    assert bm25_rank("paging", DOCS, 10)[0][0] == "b2"
    tied = [("z", "same words"), ("a", "same words"), ("m", "same words"), ("q", "other")]
    assert [b for b, _ in bm25_rank("words", tied, 10)] == ["a", "m", "z"]
    assert [b for b, _ in bm25_rank("words", tied, 2)] == ["a", "m"]
    assert bm25_rank("", DOCS, 10) == []
    assert bm25_rank("(:)", DOCS, 10) == []
    assert bm25_rank("fox", DOCS, 0) == []
    assert bm25_rank("fox", [], 10) == []


def test_bm25_rank_score_by_hand() -> None:
    docs = [("a", "cat cat dog"), ("b", "dog"), ("c", "bird")]
    [(top, score)] = bm25_rank("cats", docs, 10)  # "cats" stems to "cat"
    n, df, tf, dl, avgdl = 3, 1, 2, 3, 5 / 3
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    expected = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
    assert top == "a" and math.isclose(score, expected)
    # Repeating a query word does not count it twice.
    assert bm25_rank("cat cats CAT", docs, 10) == [(top, score)]


def test_bm25_rank_last_text_of_a_block_wins() -> None:
    docs = [("a", "apples"), ("b", "apples and pears"), ("a", "plums")]
    assert [b for b, _ in bm25_rank("apples", docs, 10)] == ["b"]
    assert [b for b, _ in bm25_rank("plums", docs, 10)] == ["a"]


@settings(max_examples=200, deadline=None)
@given(query=ANY_TEXT, limit=st.integers(-1, 6))
def test_bm25_rank_any_query_never_raises(query: str, limit: int) -> None:
    _assert_ordered(bm25_rank(query, DOCS, limit), limit)
