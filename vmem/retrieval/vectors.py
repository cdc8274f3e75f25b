"""VectorIndex: a persistent usearch ANN index over block ids, and the embedding cache.

One index holds the vectors of one namespace made by one embedder.  It is a
cache of the log: :meth:`VectorIndex.save` records the log sequence it
reflects, and whoever feeds it resumes after :attr:`VectorIndex.through_seq`
on restart instead of rebuilding (adding 100k vectors costs tens of seconds).

Keys: usearch wants integer keys.  A block's key is its position in the order
of addition (0, 1, 2, ...), so the id map is a plain list and keys never
collide; since blocks are added in log order, the keys are a pure function of
the log.  Blocks are immutable and content-addressed, so nothing is removed.

Storage, in the directory given to :meth:`VectorIndex.open`::

    CURRENT              JSON: generation, through_seq, count, dim, dtype, embedder id
    g-00000007/index.usearch
    g-00000007/ids.msgpack   the block ids, in key order

A save writes a whole new generation directory, fsyncs it, then replaces
CURRENT (write to a temporary file, then ``os.replace``), and only then
deletes older generations.  A crash at any point leaves CURRENT naming a
complete generation.

Cache: the index is also the embedding cache keyed by (block id, embedder id):
the embedder id is fixed per index (checked on open), :meth:`VectorIndex.missing`
says which blocks still need embedding and :meth:`VectorIndex.get` returns a
stored vector.  With the default float16 storage that vector is rounded to
float16 (cosine to the original > 0.9999), which is all ranking needs.

Determinism and recall: up to `exact_limit` vectors (100k by default) a
search compares the query with every vector (about 5-8 ms at 100k, 384-d,
float16, on 2 cores).  Its result depends only on the set of vectors, so
re-running a decision on a replayed state finds the same blocks, and recall
is complete.  Past that, search walks usearch's HNSW graph (~1 ms), which is
approximate and depends on the graph's history: the same additions with one
thread (the default) build the same graph byte for byte, but with a save
and reopen in the middle they build another one (measured: usearch 2.26; the
levels drawn for later nodes differ), and so do several threads.  Re-deciding on a replayed state is
therefore exact only below `exact_limit`; recorded selections always re-render.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from usearch.index import Index

from vmem.errors import VmemError

__all__ = ["VectorIndex", "VectorIndexError"]

_FORMAT = 1
_CURRENT = "CURRENT"
_INDEX_FILE = "index.usearch"
_IDS_FILE = "ids.msgpack"
# Extra candidates fetched beyond `limit`, so that equal scores at the cut
# are ordered by block id among all of them, not by graph traversal order.
_TIE_SLACK = 8

Dtype = Literal["f16", "f32"]


class VectorIndexError(VmemError):
    """A vector index on disk is damaged, or was built for another embedder."""


class _Current(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    generation: int
    through_seq: int
    count: int
    dim: int
    dtype: str
    embedder_id: str


_ids_encoder = msgspec.msgpack.Encoder()
_ids_decoder = msgspec.msgpack.Decoder(list[str])
_current_decoder = msgspec.json.Decoder(_Current)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes a rename or a new entry in `path` durable (POSIX); harmless elsewhere.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _gen_dir(root: Path, generation: int) -> Path:
    return root / f"g-{generation:08d}"


class VectorIndex:
    """Approximate nearest neighbours (cosine) over the block ids of one (namespace, embedder).

    Create or load one with :meth:`open`.  Not thread-safe: one owner (the
    retriever actor) adds, searches and saves.
    """

    def __init__(self, path: Path, index: Index, ids: list[str], current: _Current, exact_limit: int) -> None:
        """Use :meth:`open`."""
        self._path = path
        self._exact_limit = exact_limit
        self._index = index
        self._ids = ids
        self._keys = {block_id: key for key, block_id in enumerate(ids)}
        self._current = current
        self._dirty = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        dim: int,
        embedder_id: str,
        dtype: Dtype = "f16",
        exact_limit: int = 100_000,
    ) -> VectorIndex:
        """Load the index saved in directory `path`, or start an empty one there.

        Nothing is rebuilt: the saved index is read as it is.  `dim` and
        `embedder_id` must match what the index was saved with (vectors of
        different embedders are not comparable); `dtype` applies to a new
        index only.  Raises :class:`VectorIndexError` on a mismatch or a
        damaged index; deleting the directory is always safe (it is a cache of
        the log) and makes the next open start empty.

        float16 (the default) halves memory and disk and makes search faster
        than float32; its 3 significant digits do not change rankings of
        unit vectors in a way that matters for recall.  Searches are exact
        while the index holds at most `exact_limit` vectors (see the module
        docstring).
        """
        if dtype not in ("f16", "f32"):
            raise VectorIndexError(f"vector index dtype must be 'f16' or 'f32', got {dtype!r}")
        root = Path(path)
        current_file = root / _CURRENT
        if not current_file.exists():
            index = Index(ndim=dim, metric="cos", dtype=dtype)
            empty = _Current(
                format=_FORMAT, generation=0, through_seq=0, count=0, dim=dim, dtype=dtype, embedder_id=embedder_id
            )
            return cls(root, index, [], empty, exact_limit)
        try:
            current = _current_decoder.decode(current_file.read_bytes())
        except msgspec.DecodeError as exc:
            raise VectorIndexError(f"{current_file} is damaged ({exc}); delete {root} to rebuild from the log") from None
        if current.format != _FORMAT:
            raise VectorIndexError(f"{root} has index format {current.format}, this vmem reads {_FORMAT}")
        if current.embedder_id != embedder_id or current.dim != dim:
            raise VectorIndexError(
                f"{root} holds vectors of embedder {current.embedder_id!r} ({current.dim}-d), not "
                f"{embedder_id!r} ({dim}-d); use another directory per embedder, or delete it to rebuild"
            )
        gen = _gen_dir(root, current.generation)
        try:
            ids = _ids_decoder.decode((gen / _IDS_FILE).read_bytes())
            index = Index(ndim=dim, metric="cos", dtype=current.dtype)
            index.load(str(gen / _INDEX_FILE))
        except (OSError, RuntimeError, msgspec.DecodeError) as exc:
            raise VectorIndexError(
                f"cannot load vector index generation {gen}: {exc}; delete {root} to rebuild from the log"
            ) from None
        if len(ids) != current.count or len(index) != current.count or index.ndim != dim:
            raise VectorIndexError(
                f"vector index {gen} is inconsistent (CURRENT says {current.count} vectors, ids file "
                f"{len(ids)}, index {len(index)}); delete {root} to rebuild from the log"
            )
        return cls(root, index, ids, current, exact_limit)

    @property
    def path(self) -> Path:
        """The directory the index is saved in."""
        return self._path

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._current.dim

    @property
    def embedder_id(self) -> str:
        """Id of the embedder whose vectors these are."""
        return self._current.embedder_id

    @property
    def through_seq(self) -> int:
        """Log sequence the last save (or the loaded save) reflects; 0 if never saved."""
        return self._current.through_seq

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, block_id: object) -> bool:
        return block_id in self._keys

    def missing(self, block_ids: Iterable[str]) -> list[str]:
        """The ids among `block_ids` that have no vector yet (in order, once each): those to embed."""
        seen: set[str] = set()
        out = []
        for block_id in block_ids:
            if block_id not in self._keys and block_id not in seen:
                seen.add(block_id)
                out.append(block_id)
        return out

    def get(self, block_id: str) -> npt.NDArray[np.float32] | None:
        """The stored vector of `block_id` (float32, as stored: float16-rounded by default), or None."""
        key = self._keys.get(block_id)
        if key is None:
            return None
        vector = self._index.get(key)
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def add(self, block_ids: Sequence[str], vectors: npt.ArrayLike, *, threads: int = 1) -> int:
        """Add the vectors of `block_ids`; ids already present are skipped. Returns how many were new.

        `vectors` has shape (len(block_ids), dim), finite and not all zero.
        `threads` > 1 builds faster but makes the graph (and so approximate
        results) depend on thread timing; keep 1 wherever replay matters.
        """
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(block_ids), self.dim):
            raise VectorIndexError(
                f"add() needs vectors of shape ({len(block_ids)}, {self.dim}), got {matrix.shape}"
            )
        rows: list[int] = []
        fresh: list[str] = []
        batch: set[str] = set()
        for row, block_id in enumerate(block_ids):
            if block_id not in self._keys and block_id not in batch:
                batch.add(block_id)
                rows.append(row)
                fresh.append(block_id)
        if not fresh:
            return 0
        chosen = matrix[rows]
        if not np.isfinite(chosen).all() or not chosen.any(axis=1).all():
            raise VectorIndexError("add() vectors must be finite and non-zero (cosine is undefined otherwise)")
        first = len(self._ids)
        keys = np.arange(first, first + len(fresh), dtype=np.uint64)
        self._index.add(keys, chosen, threads=threads)
        self._ids.extend(fresh)
        for offset, block_id in enumerate(fresh):
            self._keys[block_id] = first + offset
        self._dirty = True
        return len(fresh)

    def search(
        self, vector: npt.ArrayLike, limit: int, *, exclude: Iterable[str] = (), exact: bool | None = None
    ) -> list[tuple[str, float]]:
        """The `limit` nearest blocks to `vector` as (block id, cosine similarity).

        Sorted by similarity descending, then block id ascending, so ties are
        ordered the same way every time.  Blocks in `exclude` are left out
        (and do not use up the limit).  `exact` forces brute force (True) or
        the HNSW graph (False); by default brute force is used up to the
        index's `exact_limit` vectors.
        """
        if limit <= 0 or not self._ids:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (self.dim,):
            raise VectorIndexError(f"search() needs a vector of length {self.dim}, got shape {query.shape}")
        if not np.isfinite(query).all() or not query.any():
            raise VectorIndexError("search() vector must be finite and non-zero")
        excluded = {key for block_id in exclude if (key := self._keys.get(block_id)) is not None}
        want = min(len(self._ids), limit + len(excluded) + _TIE_SLACK)
        if exact is None:
            exact = len(self._ids) <= self._exact_limit
        matches = self._index.search(query, want, threads=1, exact=exact)
        hits: list[tuple[str, float]] = []
        for key, distance in zip(matches.keys.tolist(), matches.distances.tolist()):
            if key in excluded:
                continue
            similarity = 1.0 - distance
            if math.isfinite(similarity):
                hits.append((self._ids[key], similarity))
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits[:limit]

    def save(self, through_seq: int) -> None:
        """Persist the index as reflecting the log through `through_seq`.

        Writes a full copy when vectors were added since the last save (tens
        of MB at 100k vectors: save in batches, not per event); otherwise only
        the small CURRENT file.  `through_seq` may not go backwards.
        """
        if through_seq < self._current.through_seq:
            raise VectorIndexError(
                f"save(through_seq={through_seq}) would go back from {self._current.through_seq}"
            )
        self._path.mkdir(parents=True, exist_ok=True)
        generation = self._current.generation
        if self._dirty or generation == 0:
            generation += 1
            gen = _gen_dir(self._path, generation)
            # A leftover from a save that crashed before switching CURRENT.
            shutil.rmtree(gen, ignore_errors=True)
            gen.mkdir()
            self._index.save(str(gen / _INDEX_FILE))
            (gen / _IDS_FILE).write_bytes(_ids_encoder.encode(self._ids))
            for name in (_INDEX_FILE, _IDS_FILE):
                _fsync_file(gen / name)
            _fsync_dir(gen)
        current = msgspec.structs.replace(
            self._current, generation=generation, through_seq=through_seq, count=len(self._ids)
        )
        tmp = self._path / (_CURRENT + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(current))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path / _CURRENT)
        _fsync_dir(self._path)
        self._current = current
        self._dirty = False
        keep = _gen_dir(self._path, generation).name
        for old in self._path.glob("g-*"):
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
