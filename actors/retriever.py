"""The retriever actor: runs every retriever of a query concurrently and fuses them.

Built in: BM25 over a tantivy index (plus an in-memory BM25 over the log's
tail that is not yet committed), recency, and graph neighbours of the strong
hits; plugins are any :class:`vmem.retrieval.retrievers.Retriever`.  Each runs under a
timeout; a failing or slow one is reported in the reply, not fatal.  Indexes
are caches: each records the log sequence it reflects and is committed in
batches by ``sync`` (after ingest, or when the tail grows), never per turn.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

import anyio
import numpy as np

from vmem.actors.runtime import Route
from vmem.assembly.render import searchable_text
from vmem.retrieval.bm25 import Bm25Index, IndexBusy, TailIndex
from vmem.retrieval.embed import Embedder, HashingEmbedder
from vmem.retrieval.fusion import DEFAULT_POLICY, FusionPolicy, fuse
from vmem.retrieval.retrievers import (
    RecencyRetriever,
    RetrievalContext,
    RetrievalQuery,
    Retriever,
    graph_neighbours,
)
from vmem.retrieval.vectors import VectorIndex
from vmem.schemas.events import BlockWritten
from vmem.schemas.messages import SearchReply, SearchRequest, StoredEvent, SyncReply, SyncRequest
from vmem.storage.home import Home
from vmem.storage.view import checked_batches

INDEXED_KINDS = frozenset({"page", "summary", "message", "fact", "tool_call", "tool_result"})
DEFAULT_TIMEOUT_S = 2.0
BUILTINS = frozenset({"bm25", "vector", "recency", "graph"})
# Indexes are caches of the log: a change to what they hold of a block (v2:
# its searchable text, header included) gets new directories, rebuilt by the
# next sync; until then the log's tail index covers every block.
INDEX_FORMAT = "v2"
GRAPH_SEEDS = 8  # strong hits whose neighbours the graph retriever offers
# Up to this many vectors, search is exact (results depend only on the set of
# vectors); above, usearch's HNSW graph (about 0.8 ms instead of 6 ms at 100k,
# but results depend on how the graph was built: replay re-decides from the
# candidates each trace records, so it is unaffected).
EXACT_VECTORS = 20_000
SYNC_BATCH = 1024  # events read per step while indexing: bounds memory on a large ingest


class _Bm25:
    """BM25 for one namespace: the committed tantivy index plus the log's tail."""

    name = "bm25"

    def __init__(self, index: Bm25Index) -> None:
        self.index = index
        self.tail = TailIndex()
        self.tail_pos = index.through_seq

    def follow(self, before: int, events: Sequence[StoredEvent], after: int) -> None:
        """A namespace view's listener: index the blocks of events past the tail (see NamespaceView.watch)."""
        if before > self.tail_pos or after <= self.tail_pos:
            return  # a gap (read from the log at the next search) or nothing new
        for stored in events:
            ev = stored.event
            if stored.seq > self.tail_pos and type(ev) is BlockWritten and ev.kind in INDEXED_KINDS:
                self.tail.add(ev.block_id, searchable_text(ev))
        self.tail_pos = after

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext) -> list[tuple[str, float]]:
        want = query.limit * 2
        hits = self.index.search(query.text, want)
        tail = self.tail.rank(query.text, want)
        merged: dict[str, float] = {}
        for bid, score in hits + tail:
            if ctx.eligible(bid, query.kinds):
                merged[bid] = max(score, merged.get(bid, 0.0))
        return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[: query.limit]


class _Vectors:
    """Nearest neighbours for one namespace: the saved usearch index plus the log's tail."""

    name = "vector"

    def __init__(self, index: VectorIndex, embedder: Embedder) -> None:
        self.index = index
        self.embedder = embedder
        self.tail_ids: list[str] = []
        self._tail_parts: list[np.ndarray] = []
        self._tail_matrix: np.ndarray | None = None
        self.tail_pos = index.through_seq
        self.unembedded: list[tuple[str, str]] = []  # told of, embedded at the next search

    def follow(self, before: int, events: Sequence[StoredEvent], after: int) -> None:
        """A namespace view's listener: queue the blocks of events past the tail for embedding."""
        if before > self.tail_pos or after <= self.tail_pos:
            return
        self.unembedded += [
            (s.event.block_id, searchable_text(s.event)) for s in events
            if s.seq > self.tail_pos and type(s.event) is BlockWritten and s.event.kind in INDEXED_KINDS
        ]
        self.tail_pos = after

    async def embed_queued(self) -> None:
        pairs, self.unembedded = self.unembedded, []
        await self.extend_tail(pairs)

    async def extend_tail(self, pairs: list[tuple[str, str]]) -> None:
        ids, vecs = await embed_nonzero(self.embedder, pairs)
        if ids:
            self.tail_ids += ids
            self._tail_parts.append(vecs)
            self._tail_matrix = None

    def reset_tail(self) -> None:
        self.tail_ids, self._tail_parts, self._tail_matrix, self.unembedded = [], [], None, []

    @property
    def tail_vecs(self) -> np.ndarray:
        # Concatenated once per change, not once per search.
        if self._tail_matrix is None:
            self._tail_matrix = (np.concatenate(self._tail_parts) if self._tail_parts
                                 else np.zeros((0, self.embedder.dim), dtype=np.float32))
            self._tail_parts = [self._tail_matrix] if self._tail_parts else []
        return self._tail_matrix

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext) -> list[tuple[str, float]]:
        qv = (await self.embedder.embed([query.text]))[0]
        if not qv.any():
            return []
        want = query.limit * 2
        hits = self.index.search(qv, want) if len(self.index) else []
        if self.tail_ids:
            sims = self.tail_vecs @ qv
            hits = hits + list(zip(self.tail_ids, sims.tolist()))
        merged: dict[str, float] = {}
        for bid, score in hits:
            if ctx.eligible(bid, query.kinds):
                merged[bid] = max(float(score), merged.get(bid, -1.0))
        return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[: query.limit]


async def embed_nonzero(embedder: Embedder, pairs: list[tuple[str, str]]) -> tuple[list[str], np.ndarray]:
    """Embeddings of (block id, text) pairs, leaving out texts that embed to zero."""
    if not pairs:
        return [], np.zeros((0, embedder.dim), dtype=np.float32)
    vecs = await embedder.embed([t for _b, t in pairs])
    keep = vecs.any(axis=1)
    return [b for (b, _t), k in zip(pairs, keep) if k], vecs[keep]


class RetrieverActor:
    name = "retriever"
    queue = "retriever"
    concurrency = 1

    def __init__(
        self,
        home: Home,
        *,
        plugins: Sequence[Retriever] = (),
        policy: FusionPolicy = DEFAULT_POLICY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        embedder: Embedder | None = None,
        builtins: frozenset[str] = BUILTINS,
    ) -> None:
        self.home = home
        self.plugins = list(plugins)
        self.timeout_s = timeout_s
        self.embedder = embedder if embedder is not None else HashingEmbedder()
        self.policy = policy.for_embedder(semantic=self.embedder.semantic)
        self.builtins = builtins
        self._bm25: dict[str, _Bm25] = {}
        self._vectors: dict[str, _Vectors] = {}
        self._recency = RecencyRetriever()

    def routes(self):
        return {"search": Route(self.search, SearchRequest), "sync": Route(self.sync, SyncRequest, client=False)}

    def _index(self, ns: str) -> _Bm25:
        idx = self._bm25.get(ns)
        if idx is None:
            path = self.home.index_dir(ns) / f"bm25-{INDEX_FORMAT}"
            path.mkdir(parents=True, exist_ok=True)
            idx = self._bm25[ns] = _Bm25(Bm25Index.open(path))
            self.home.view(ns).watch(idx.follow)
        return idx

    def _vector_index(self, ns: str) -> _Vectors:
        vec = self._vectors.get(ns)
        if vec is None:
            slug = re.sub(r"[^A-Za-z0-9_.-]", "_", self.embedder.id)
            path = self.home.index_dir(ns) / f"vectors-{slug}-{INDEX_FORMAT}"
            index = VectorIndex.open(path, dim=self.embedder.dim, embedder_id=self.embedder.id, exact_limit=EXACT_VECTORS)
            vec = self._vectors[ns] = _Vectors(index, self.embedder)
            self.home.view(ns).watch(vec.follow)
        return vec

    async def _follow_tail(self, ns: str, idx: _Bm25) -> None:
        """Bring the tail indexes up to the view: told of by the view as it folds, read here only after a gap."""
        upto = self.home.view(ns).pos
        if idx.tail_pos >= upto:
            batches = _nothing()
        else:
            batches = checked_batches(self.home.log, ns, after=idx.tail_pos, until=upto, on_reject=_ignore)
        async for batch, covered in batches:
            for stored in batch:
                ev = stored.event
                if type(ev) is BlockWritten and ev.kind in INDEXED_KINDS:
                    idx.tail.add(ev.block_id, searchable_text(ev))
            idx.tail_pos = covered
        if "vector" not in self.builtins:
            return
        vec = self._vector_index(ns)
        await vec.embed_queued()
        if vec.tail_pos >= upto:
            return
        async for batch, covered in checked_batches(self.home.log, ns, after=vec.tail_pos, until=upto, on_reject=_ignore):
            await vec.extend_tail([
                (s.event.block_id, searchable_text(s.event)) for s in batch
                if type(s.event) is BlockWritten and s.event.kind in INDEXED_KINDS
            ])
            vec.tail_pos = covered

    async def _sync_vectors(self, ns: str) -> int:
        vec = self._vector_index(ns)
        added = 0
        async for batch, _covered in checked_batches(self.home.log, ns, after=vec.index.through_seq, batch=SYNC_BATCH,
                                                     on_reject=_ignore):
            pairs = [
                (s.event.block_id, searchable_text(s.event)) for s in batch
                if type(s.event) is BlockWritten and s.event.kind in INDEXED_KINDS
            ]
            ids, vecs = await embed_nonzero(self.embedder, pairs)
            if ids:
                # One thread: the graph (and so approximate results) must not
                # depend on thread timing, or re-decide could differ.
                added += vec.index.add(ids, vecs, threads=1)
        if added or vec.index.through_seq < await self.home.log.last_seq(ns):
            vec.index.save(await self.home.log.last_seq(ns))
        vec.reset_tail()
        vec.tail_pos = vec.index.through_seq
        return added

    async def sync(self, req: SyncRequest) -> SyncReply:
        """Index everything the log holds for the namespace and commit."""
        idx = self._index(req.ns)
        await self.home.view(req.ns).catch_up()
        index = idx.index
        if not index.try_acquire_writer():
            # Another process is indexing this namespace; the tail covers us.
            return SyncReply(through_seq=index.through_seq, indexed=0)
        indexed = 0
        try:
            async for batch, covered in checked_batches(self.home.log, req.ns, after=index.through_seq, batch=SYNC_BATCH,
                                                        on_reject=_ignore):
                for stored in batch:
                    ev = stored.event
                    if type(ev) is BlockWritten and ev.kind in INDEXED_KINDS:
                        index.add(ev.block_id, searchable_text(ev))
                        indexed += 1
                # Commit in steps so a very large ingest is indexed in bounded memory.
                index.commit(covered)
        except IndexBusy:
            return SyncReply(through_seq=index.through_seq, indexed=indexed)
        idx.tail = TailIndex()
        idx.tail_pos = index.through_seq
        if "vector" in self.builtins:
            await self._sync_vectors(req.ns)
        return SyncReply(through_seq=index.through_seq, indexed=indexed)

    async def search(self, req: SearchRequest) -> SearchReply:
        view = self.home.view(req.ns)
        await view.catch_up()
        bm25 = self._index(req.ns)
        await self._follow_tail(req.ns, bm25)
        ctx = RetrievalContext(state=view.state, store=self.home.store)
        exclude = set(req.exclude)
        query = RetrievalQuery(ns=req.ns, text=req.query, limit=req.limit + len(exclude), kinds=frozenset(req.kinds))
        results: dict[str, list[tuple[str, float]]] = {}
        errors: list[str] = []

        async def run(r: Retriever) -> None:
            with anyio.move_on_after(self.timeout_s) as scope:
                try:
                    hits = await r.search(query, ctx)
                except Exception as exc:  # a plugin's failure is recorded, not fatal
                    errors.append(f"{r.name}: {type(exc).__name__}: {exc}")
                    return
                results[r.name] = [(b, float(s)) for b, s in hits if b not in exclude and ctx.eligible(b, query.kinds)]
            if scope.cancelled_caught:
                errors.append(f"{r.name}: timed out after {self.timeout_s:g}s")

        first_stage: list[Retriever] = [*self.plugins]
        if "bm25" in self.builtins:
            first_stage.append(bm25)
        if "vector" in self.builtins:
            first_stage.append(self._vector_index(req.ns))
        if "recency" in self.builtins:
            first_stage.append(self._recency)
        async with anyio.create_task_group() as tg:
            for r in first_stage:
                tg.start_soon(run, r)
        matched = {b for name, hits in results.items() if name != "recency" for b, _s in hits}
        if matched and "recency" in results:
            # Recency alone must not page in blocks that share nothing with the query.
            results["recency"] = [(b, s) for b, s in results["recency"] if b in matched]
        if "graph" in self.builtins:
            seeds = fuse(results, GRAPH_SEEDS, self.policy)
            results["graph"] = [
                (b, s)
                for b, s in graph_neighbours(view.state, [(c.block_id, c.score) for c in seeds], query.kinds, query.limit)
                if b not in exclude
            ]
        candidates = fuse(results, req.limit, self.policy)
        return SearchReply(candidates=tuple(candidates), index_seq=bm25.index.through_seq, errors=tuple(sorted(errors)))


async def _nothing() -> AsyncIterator[tuple[list[StoredEvent], int]]:
    return
    yield


def _ignore(_rejected: object) -> None:
    """Skipped records are reported by the namespace's view; indexes just leave them out."""
