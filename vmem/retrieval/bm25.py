"""BM25 full-text search over the blocks of one namespace.

The event log is the truth; this index is a cache of it.  It records the last
log sequence it reflects (``through_seq``) so a caller can feed it the events
after that sequence and cover the still-uncommitted tail with
:func:`bm25_rank`, an in-memory BM25 over the same terms.

Invariant: everything in the log up to :attr:`Bm25Index.through_seq` is
visible to :meth:`Bm25Index.search`.  The index may hold more than that (a
crash between tantivy's commit and the sidecar write), which is harmless
because :meth:`Bm25Index.add` is idempotent.

A handle is not thread-safe; give each actor its own.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import tantivy

from vmem.errors import HomeError, UsageError, VmemError

# BM25 parameters; tantivy hard-codes the same values, so bm25_rank and the
# index score on the same scale (up to tantivy's lossy field-length encoding).
K1 = 1.2
B = 0.75

_BLOCK_ID = "block_id"
_TEXT = "text"
# Written only after tantivy's commit succeeded; lives inside the index
# directory, where tantivy's garbage collector leaves unmanaged files alone.
_SIDECAR = "vmem-through-seq"
# One indexing thread: blocks are short, and one thread keeps memory per
# namespace small (tantivy wants at least 15 MB of arena per thread).
_WRITER_HEAP = 50_000_000
_WRITER_THREADS = 1


class IndexBusy(VmemError):
    """Another handle, in this process or another, holds the index's writer lock."""


@functools.cache
def _analyzer() -> tantivy.TextAnalyzer:
    # Built to match tantivy's registered `en_stem` (SimpleTokenizer, drop
    # tokens of 40+ bytes, lowercase, English Snowball stemmer), so query terms
    # are exactly the terms the index holds.  Built on first use, not at import.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


# Snowball's English stop word list (snowballstem.org; the project whose English
# stemmer `en_stem` uses), as the simple tokenizer splits it ("didn't" -> "didn",
# "t").  Left out of queries, not of the index: a question's function words
# ("when did", "what was", "how do") say nothing about which block holds the
# answer, and under BM25's saturating term frequency they favour long chatty
# blocks full of them.
_STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren as at be because been before being below between both
but by can cannot could couldn d did didn do does doesn doing don down during each few for from further had hadn has
hasn have haven having he her here hers herself him himself his how i if in into is isn it its itself let ll m me more
most mustn my myself no nor not of off on once only or other ought our ours ourselves out over own re s same shan she
should shouldn so some such t than that the their theirs them themselves then there these they this those through to
too under until up ve very was wasn we were weren what when where which while who whom why with won would wouldn you
your yours yourself yourselves
""".split())


@functools.cache
def _query_analyzer() -> tantivy.TextAnalyzer:
    # `en_stem` with Snowball's stop words removed before stemming.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.custom_stopword(sorted(_STOP_WORDS)))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _rust_safe(text: str) -> str:
    # Lone surrogates (e.g. from surrogateescape-decoded input) cannot cross
    # into Rust; replace them rather than fail on user text.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def terms(text: str) -> list[str]:
    """The index terms of `text`, in order, with repeats: what `en_stem` yields."""
    return _analyzer().analyze(_rust_safe(text))


def query_terms(query: str) -> list[str]:
    """The distinct terms a query searches for, sorted: stemmed, stop words dropped unless nothing else is left.

    Each distinct term counts once, in a fixed order, so scores do not depend
    on how often or in which order the user typed a word ("who are you?"
    keeps its stop words: they are all it has).
    """
    return sorted(set(_query_analyzer().analyze(_rust_safe(query)))) or sorted(set(terms(query)))


def _ranked(scored: dict[str, float], limit: int) -> list[tuple[str, float]]:
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:limit]


def bm25_rank(query: str, docs: Sequence[tuple[str, str]], limit: int) -> list[tuple[str, float]]:
    """Rank `(block_id, text)` pairs against `query` with BM25 (k1=1.2, b=0.75).

    Uses the index's terms and idf formula, so it covers blocks not yet
    committed to a :class:`Bm25Index` without a commit on the hot path.  If a
    block id repeats, its last text wins, as with :meth:`Bm25Index.add`.
    Returns at most `limit` `(block_id, score)` pairs of documents matching at
    least one term, by score descending then block id ascending; ``[]`` if
    `limit` < 1 or the query has no terms.
    """
    tail = TailIndex()
    for block_id, text in dict(docs).items():
        tail.add(block_id, text)
    return tail.rank(query, limit)


class TailIndex:
    """An in-memory BM25 index that grows one block at a time (the log's uncommitted tail).

    Postings are kept per term, so a query costs what its terms' postings
    cost, not the size of the tail, and nothing is analysed twice.
    """

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, int]] = {}
        self._lengths: dict[str, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, block_id: str, text: str) -> None:
        if block_id in self._lengths:
            self._remove(block_id)
        counts = Counter(terms(text))
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[block_id] = tf
        n = sum(counts.values())
        self._lengths[block_id] = n
        self._total += n

    def _remove(self, block_id: str) -> None:
        for postings in self._postings.values():
            postings.pop(block_id, None)
        self._total -= self._lengths.pop(block_id)

    def rank(self, query: str, limit: int) -> list[tuple[str, float]]:
        qterms = query_terms(query)
        n_docs = len(self._lengths)
        if limit < 1 or not qterms or not n_docs:
            return []
        avgdl = self._total / n_docs
        scored: dict[str, float] = {}
        for term in qterms:
            postings = self._postings.get(term)
            if not postings:
                continue
            df = len(postings)
            idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
            for block_id, tf in postings.items():
                # avgdl > 0 here: a document holding the term has length >= 1.
                norm = K1 * (1.0 - B + B * self._lengths[block_id] / avgdl)
                scored[block_id] = scored.get(block_id, 0.0) + idf * tf * (K1 + 1.0) / (tf + norm)
        return _ranked(scored, limit)


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    # Raw: one untokenized term per block, so delete-by-term hits exactly it.
    builder.add_text_field(_BLOCK_ID, stored=True, tokenizer_name="raw", index_option="basic")
    # Frequencies without positions: BM25 needs no more, and it halves postings.
    builder.add_text_field(_TEXT, stored=False, tokenizer_name="en_stem", index_option="freq")
    return builder.build()


def _read_sidecar(path: Path) -> int:
    try:
        raw = (path / _SIDECAR).read_text(encoding="ascii")
    except FileNotFoundError:
        return 0
    try:
        return max(0, int(raw.strip()))
    except ValueError:
        # Only outside damage can cause this (writes are atomic).  Starting
        # over from 0 is safe: re-adding from the log is idempotent.
        return 0


def _write_sidecar(path: Path, seq: int) -> None:
    # A fixed temp name is safe: only the writer-lock holder writes here.
    tmp = path / (_SIDECAR + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{seq}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path / _SIDECAR)
    # Make the rename itself durable.
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Bm25Index:
    """A tantivy BM25 index of one namespace's blocks, a cache of the event log.

    Readers need no lock.  Writing takes tantivy's writer lock, lazily, on the
    first :meth:`add` or :meth:`commit`; a handle that cannot get it raises
    :class:`IndexBusy` and its caller should leave indexing to the holder.
    Create with :meth:`open`.
    """

    def __init__(self, path: Path, index: tantivy.Index, schema: tantivy.Schema, through_seq: int) -> None:
        self._path = path
        self._index = index
        self._schema = schema
        self._through_seq = through_seq
        self._writer: tantivy.IndexWriter | None = None
        self._closed = False

    @classmethod
    def open(cls, path: Path) -> Bm25Index:
        """Open the index in directory `path`, creating the directory and index if absent.

        Raises :class:`HomeError` if `path` holds an index of another schema or
        one tantivy cannot read; deleting the directory rebuilds it from the log.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        schema = _schema()
        # Sidecar before index: the index is never behind the sidecar, so a
        # reader opened after reading it reflects at least that sequence.
        through_seq = _read_sidecar(path)
        try:
            index = tantivy.Index(schema, str(path), reuse=True)
            # Manual reloads keep `through_seq` and the searcher's view in step.
            index.config_reader("manual")
        except ValueError as exc:
            raise HomeError(
                f"cannot open the BM25 index at {path}: {exc}; it is a cache of the log, "
                f"so delete that directory to rebuild it"
            ) from exc
        return cls(path, index, schema, through_seq)

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._path

    @property
    def through_seq(self) -> int:
        """The last log sequence the current searcher reflects (0 for a new index)."""
        return self._through_seq

    @property
    def doc_count(self) -> int:
        """Blocks visible to :meth:`search` (committed and loaded)."""
        return self._index.searcher().num_docs

    @property
    def has_writer(self) -> bool:
        """Whether this handle holds the writer lock."""
        return self._writer is not None

    def refresh(self) -> None:
        """See the latest commit, possibly made by another process, and its `through_seq`."""
        # Same order as in open(): sidecar first, then reload.
        seq = _read_sidecar(self._path)
        self._index.reload()
        self._through_seq = seq

    def try_acquire_writer(self) -> bool:
        """Take the writer lock if free; False if another handle holds it.

        On success the handle first catches up (:meth:`refresh`), so
        :attr:`through_seq` is where the holder should resume feeding the log.
        """
        self._check_open()
        if self._writer is not None:
            return True
        try:
            writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=_WRITER_THREADS)
        except ValueError as exc:
            # tantivy-py reports a held lock only as ValueError mentioning LockBusy.
            if "LockBusy" in str(exc):
                return False
            raise HomeError(f"cannot open a writer on the BM25 index at {self._path}: {exc}") from exc
        self._writer = writer
        self.refresh()
        return True

    def _require_writer(self) -> tantivy.IndexWriter:
        if not self.try_acquire_writer():
            raise IndexBusy(
                f"the BM25 index at {self._path} is being written by another handle or process; "
                f"leave indexing to it (the index is a cache of the log) and retry later"
            )
        assert self._writer is not None
        return self._writer

    def add(self, block_id: str, text: str) -> None:
        """Index `text` as block `block_id`, replacing any earlier text of it.

        Buffered until :meth:`commit`.  Raises :class:`IndexBusy` if another
        handle holds the writer lock.
        """
        writer = self._require_writer()
        writer.delete_documents_by_term(_BLOCK_ID, block_id)
        doc = tantivy.Document()
        doc.add_text(_BLOCK_ID, block_id)
        doc.add_text(_TEXT, _rust_safe(text))
        writer.add_document(doc)

    def commit(self, through_seq: int) -> None:
        """Make buffered adds durable and searchable, and record `through_seq`.

        `through_seq` is the last log sequence the index now reflects; it may
        not go backwards.  Raises :class:`IndexBusy` if another handle holds
        the writer lock.
        """
        writer = self._require_writer()
        if through_seq < self._through_seq:
            raise UsageError(
                f"commit through sequence {through_seq} is behind the index, which already "
                f"reflects sequence {self._through_seq}; feed events after it instead"
            )
        writer.commit()
        # Only now: a crash before this line leaves the index ahead of the
        # sidecar, never behind it.
        _write_sidecar(self._path, through_seq)
        self._index.reload()
        self._through_seq = through_seq

    def search(self, query: str, limit: int) -> list[tuple[str, float]]:
        """The top `limit` `(block_id, score)` BM25 matches of `query`.

        Any text is accepted: it is split into terms, never parsed as query
        syntax, and the terms are OR-ed.  Ordered by score descending then
        block id ascending, also across the `limit` cut-off.  ``[]`` for a
        query without terms or `limit` < 1.
        """
        qterms = query_terms(query)
        if limit < 1 or not qterms:
            return []
        searcher = self._index.searcher()
        total = searcher.num_docs
        if total == 0:
            return []
        q = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, tantivy.Query.term_query(self._schema, _TEXT, t, index_option="freq"))
                for t in qterms
            ]
        )
        # tantivy breaks score ties by document address, which depends on
        # segment layout.  Fetch past the cut-off until the last hit scores
        # strictly below it, so every tie at the boundary is seen and ordered
        # by block id.
        fetch = limit + 1
        while True:
            n = min(fetch, total)
            hits = searcher.search(q, n, count=False).hits
            if len(hits) < n or n == total or hits[-1][0] < hits[limit - 1][0]:
                break
            fetch *= 2
        scored = {str(searcher.doc(addr).get_first(_BLOCK_ID)): float(score) for score, addr in hits}
        return _ranked(scored, limit)

    def close(self) -> None:
        """Release the writer lock, dropping adds not yet committed.  Idempotent."""
        if self._writer is not None:
            # Consumes the writer and waits for merges; that drops the lock.
            self._writer.wait_merging_threads()
            self._writer = None
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the BM25 index handle for {self._path} is closed; open it again")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
