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
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path

import anyio
import numpy as np

from vmem.actors.runtime import Route
from vmem.assembly.render import searchable_text
from vmem.errors import UnknownNamespace, UsageError
from vmem.retrieval.bm25 import Bm25Index, IndexBusy, TailIndex
from vmem.retrieval.choice import default_embedder
from vmem.retrieval.embed import Embedder
from vmem.retrieval.fusion import DEFAULT_POLICY, FusionPolicy, fuse
from vmem.retrieval.recorded import built_with, check_embedder, record_embedder, recorded_embedder
from vmem.retrieval.retrievers import (
    RecencyRetriever,
    RetrievalContext,
    RetrievalQuery,
    Retriever,
    graph_neighbours,
)
from vmem.retrieval.vectors import VectorIndex
from vmem.schemas.events import BlockWritten
from vmem.schemas.messages import (
    EmbedderReply,
    EmbedderRequest,
    ReindexReply,
    ReindexRequest,
    SearchReply,
    SearchRequest,
    StoredEvent,
    SyncReply,
    SyncRequest,
)
from vmem.storage.home import Home
from vmem.storage.view import checked_batches

INDEXED_KINDS = frozenset({"page", "summary", "message", "fact", "tool_call", "tool_result"})
# Embedded for vector search: all but summaries.  A summary is written on most
# turns (of the pages a fault evicted), its text is its sources' (embedded
# already), and with MiniLM embedding it was the largest cost of a turn
# (about 25 ms of 53 at 1,000 blocks); BM25 still indexes it.
EMBEDDED_KINDS = INDEXED_KINDS - {"summary"}
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
# A re-index request embeds for about this long, then saves and replies, so the
# client can show progress and an interrupted re-index resumes where it stopped.
REINDEX_STEP_S = 5.0
# Vectors the tail may hold before a search saves them into the index.
TAIL_SAVE = 256
# Hits fetched beyond the limit, for those dropped as ineligible (the query's
# limit already counts the excluded blocks).
FETCH_SLACK = 16


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
        want = query.limit + FETCH_SLACK
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
            if s.seq > self.tail_pos and type(s.event) is BlockWritten and s.event.kind in EMBEDDED_KINDS
        ]
        self.tail_pos = after

    async def embed_queued(self, query: str | None = None) -> np.ndarray | None:
        """Embed the blocks told of and not yet embedded; with `query`, in the same batch, returning its vector.

        One batch for both: with MiniLM a forward pass over a few short
        texts costs about what one text does (the weights are read once).
        """
        pairs, self.unembedded = self.unembedded, []
        if query is None:
            await self.extend_tail(pairs)
            return None
        vecs = await self.embedder.embed([query] + [t for _b, t in pairs])
        self._add_tail(pairs, vecs[1:])
        return vecs[0]

    async def extend_tail(self, pairs: list[tuple[str, str]]) -> None:
        if pairs:
            self._add_tail(pairs, await self.embedder.embed([t for _b, t in pairs]))

    def _add_tail(self, pairs: list[tuple[str, str]], vecs: np.ndarray) -> None:
        ids, vecs = nonzero(pairs, vecs)
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
        qv = await self.embed_queued(query.text)
        assert qv is not None
        if not qv.any():
            return []
        want = query.limit + FETCH_SLACK
        hits = self.index.search(qv, want, exclude=ctx.exclude) if len(self.index) else []
        if self.tail_ids:
            sims = self.tail_vecs @ qv
            best = (np.argpartition(-sims, want)[:want] if len(sims) > want else np.arange(len(sims))).tolist()
            hits = hits + [(self.tail_ids[i], float(sims[i])) for i in best]
        merged: dict[str, float] = {}
        for bid, score in hits:
            if ctx.eligible(bid, query.kinds):
                merged[bid] = max(float(score), merged.get(bid, -1.0))
        return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[: query.limit]


async def embed_nonzero(embedder: Embedder, pairs: list[tuple[str, str]]) -> tuple[list[str], np.ndarray]:
    """Embeddings of (block id, text) pairs, leaving out texts that embed to zero."""
    if not pairs:
        return [], np.zeros((0, embedder.dim), dtype=np.float32)
    return nonzero(pairs, await embedder.embed([t for _b, t in pairs]))


def nonzero(pairs: list[tuple[str, str]], vecs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The ids and vectors of `pairs` whose vector is not zero (such a text matches nothing)."""
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
        self.embedder = embedder if embedder is not None else default_embedder()
        self.policy = policy.for_embedder(semantic=self.embedder.semantic)
        self.builtins = builtins
        self._bm25: dict[str, _Bm25] = {}
        self._vectors: dict[str, _Vectors] = {}
        self._recorded: set[str] = set()  # namespaces whose recorded embedder is this one
        self._recency = RecencyRetriever()

    def routes(self):
        return {"search": Route(self.search, SearchRequest), "sync": Route(self.sync, SyncRequest, client=False),
                "embedder": Route(self.embedder_info, EmbedderRequest), "reindex": Route(self.reindex, ReindexRequest)}

    def _index(self, ns: str) -> _Bm25:
        idx = self._bm25.get(ns)
        if idx is None:
            path = self.home.index_dir(ns) / f"bm25-{INDEX_FORMAT}"
            path.mkdir(parents=True, exist_ok=True)
            idx = self._bm25[ns] = _Bm25(Bm25Index.open(path))
            self.home.view(ns).watch(idx.follow)
        return idx

    def _vector_path(self, ns: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", self.embedder.id)
        return self.home.index_dir(ns) / f"vectors-{slug}-{INDEX_FORMAT}"

    async def _vector_index(self, ns: str) -> _Vectors:
        if ns not in self._recorded:
            # A namespace keeps the embedder it was first indexed with (see
            # vmem.retrieval.recorded): another one is refused, never mixed in.
            index_dir = self.home.index_dir(ns)
            if check_embedder(ns, index_dir, self.embedder.id, record=await self.home.log.last_seq(ns) > 0):
                self._recorded.add(ns)
        vec = self._vectors.get(ns)
        if vec is None:
            index = VectorIndex.open(self._vector_path(ns), dim=self.embedder.dim, embedder_id=self.embedder.id,
                                     exact_limit=EXACT_VECTORS)
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
        vec = await self._vector_index(ns)
        if vec.tail_pos >= upto:
            return  # what the view told of is embedded with the query, at the search
        await vec.embed_queued()
        async for batch, covered in checked_batches(self.home.log, ns, after=vec.tail_pos, until=upto, on_reject=_ignore):
            await vec.extend_tail([
                (s.event.block_id, searchable_text(s.event)) for s in batch
                if type(s.event) is BlockWritten and s.event.kind in EMBEDDED_KINDS
            ])
            vec.tail_pos = covered

    async def _sync_vectors(self, ns: str, *, deadline: float | None = None) -> int:
        """Embed what the vector index lacks and save it; past `deadline` (anyio time), stop after a batch."""
        vec = await self._vector_index(ns)
        added = 0
        through = vec.index.through_seq
        async with aclosing(checked_batches(self.home.log, ns, after=vec.index.through_seq, batch=SYNC_BATCH,
                                            on_reject=_ignore)) as batches:
            async for batch, covered in batches:
                pairs = [
                    (s.event.block_id, searchable_text(s.event)) for s in batch
                    if type(s.event) is BlockWritten and s.event.kind in EMBEDDED_KINDS
                ]
                ids, vecs = await embed_nonzero(self.embedder, pairs)
                if ids:
                    # One thread: the graph (and so approximate results) must not
                    # depend on thread timing, or re-decide could differ.
                    added += vec.index.add(ids, vecs, threads=1)
                through = covered
                if deadline is not None and anyio.current_time() >= deadline:
                    break
            else:
                through = await self.home.log.last_seq(ns)
        if added or vec.index.through_seq < through:
            vec.index.save(through)
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
        exclude = frozenset(req.exclude)
        ctx = RetrievalContext(state=view.state, store=self.home.store, exclude=exclude)
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
            first_stage.append(await self._vector_index(req.ns))
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
        if "vector" in self.builtins:
            self._save_tail(req.ns, bm25)
        return SearchReply(candidates=tuple(candidates), index_seq=bm25.index.through_seq, errors=tuple(sorted(errors)))

    def _save_tail(self, ns: str, bm25: _Bm25) -> None:
        """Once the vector tail holds TAIL_SAVE vectors, add them to the saved index (if this process may write it).

        Otherwise every new process embeds the whole tail again on its first
        search (the messages of a conversation since its last ingest: with
        MiniLM about a second per hundred).  The BM25 tail stays in memory:
        rebuilding it costs no embedding.  Search results do not change: up to
        EXACT_VECTORS the index is searched exactly, like the tail.
        """
        vec = self._vectors.get(ns)
        if vec is None or len(vec.tail_ids) < TAIL_SAVE or vec.unembedded:
            return
        if not bm25.index.try_acquire_writer():
            return  # another process indexes this namespace; it saves
        vec.index.add(vec.tail_ids, vec.tail_vecs, threads=1)
        vec.index.save(vec.tail_pos)
        through = vec.tail_pos
        vec.reset_tail()
        vec.tail_pos = through

    async def embedder_info(self, req: EmbedderRequest) -> EmbedderReply:
        """The embedder in use for `req.ns`; EmbedderMismatch if the namespace was indexed with another."""
        recorded = None
        if "vector" in self.builtins:
            await self._vector_index(req.ns)
            recorded = recorded_embedder(self.home.index_dir(req.ns))
        return EmbedderReply(embedder=self.embedder.id, recorded=recorded or "")

    async def reindex(self, req: ReindexRequest) -> ReindexReply:
        """Rebuild the namespace's vectors with this retriever's embedder, a step (about REINDEX_STEP_S) per request.

        The first request (`start`) deletes the namespace's vectors of this
        embedder and records it as the namespace's; each one embeds and saves
        a step; the last also brings the BM25 index up to date (it does not
        depend on the embedder).  Vectors of other embedders are left on disk
        (a cache nobody reads until a re-index back to them), never mixed in.
        """
        if req.embedder and req.embedder != self.embedder.id:
            raise UsageError(f"this retriever embeds with {self.embedder.id!r}, not {req.embedder!r}: re-index with "
                             f"the embedder it uses, or restart it with the one you want")
        last = await self.home.log.last_seq(req.ns)
        if last == 0:
            raise UnknownNamespace(f"namespace {req.ns!r} has no events: nothing to re-index")
        index_dir = self.home.index_dir(req.ns)
        previous = ""
        if req.start:
            previous = recorded_embedder(index_dir) or ", ".join(built_with(index_dir))
            dropped = self._vectors.pop(req.ns, None)
            if dropped is not None:
                self.home.view(req.ns).unwatch(dropped.follow)
            shutil.rmtree(self._vector_path(req.ns), ignore_errors=True)
            record_embedder(index_dir, self.embedder.id, replace=True)
            self._recorded.add(req.ns)
        if "vector" not in self.builtins:
            await self.sync(SyncRequest(ns=req.ns))
            return ReindexReply(embedder=self.embedder.id, previous=previous, through_seq=last, last_seq=last, done=True)
        await self._sync_vectors(req.ns, deadline=anyio.current_time() + REINDEX_STEP_S)
        vec = await self._vector_index(req.ns)
        done = vec.index.through_seq >= last
        if done:
            await self.sync(SyncRequest(ns=req.ns))
        return ReindexReply(embedder=self.embedder.id, previous=previous, through_seq=vec.index.through_seq,
                            last_seq=max(last, vec.index.through_seq), vectors=len(vec.index), done=done)


async def _nothing() -> AsyncIterator[tuple[list[StoredEvent], int]]:
    return
    yield


def _ignore(_rejected: object) -> None:
    """Skipped records are reported by the namespace's view; indexes just leave them out."""
