"""The LMDB block store: blocks by (namespace, id), a projection of the log, and token counts."""

from __future__ import annotations

import struct
from typing import Iterable, Mapping, Protocol

import lmdb
import msgspec

from vmem.schemas.events import BlockWritten
from vmem.storage.lmdb_env import LmdbEnv

_canonical = msgspec.msgpack.Encoder(order="deterministic")
_block_decoder = msgspec.msgpack.Decoder(BlockWritten)
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# Decoded blocks and counts kept in memory, by key: a block never changes
# (its id is its content's hash), so an entry is never stale.  Pages are read
# turn after turn (resident ones, candidates); decoding them each time was a
# tenth of a turn.  Bounded: emptied when full, refilled by the next reads.
CACHE_ENTRIES = 8192


class Counter(Protocol):
    """What the count cache needs of a tokenizer (vmem.assembly.tokens.Tokenizer is one): a name and exact counts."""

    name: str

    def count(self, text: str) -> int: ...


class BlockStore:
    """Blocks by (namespace, id), plus a token-count cache per (tokenizer, namespace, block).

    The store is a projection of the log: :meth:`project` writes a batch of
    folded events and the sequence it reflects in one transaction, so after a
    crash it resumes exactly where it stopped.  A block written twice is stored
    once (the key is its content hash).
    """

    def __init__(self, env: LmdbEnv) -> None:
        self._env = env
        self._blocks = env.db("blocks")
        self._tokens = env.db("tokens")
        self._pos = env.db("store_pos")
        self._block_cache: dict[tuple[str, str], BlockWritten] = {}
        self._count_cache: dict[bytes, int] = {}

    @staticmethod
    def _key(ns: str, bid: str) -> bytes:
        return f"{ns}\x00{bid}".encode()

    def position(self, ns: str) -> int:
        raw = self._env.read(lambda txn: txn.get(ns.encode(), db=self._pos))
        return _U64.unpack(raw)[0] if raw else 0

    def project(self, ns: str, blocks: list[BlockWritten], through_seq: int) -> None:
        """Store `blocks` and record that the store reflects the log through `through_seq`."""
        self._env.write(lambda txn: self.project_in(txn, ns, blocks, through_seq))

    def project_in(self, txn: lmdb.Transaction, ns: str, events: Iterable[object], through_seq: int) -> None:
        """Write the blocks among `events` inside an open write transaction (the log's own)."""
        for b in events:
            if type(b) is BlockWritten:
                txn.put(self._key(ns, b.block_id), _canonical.encode(b), overwrite=False, db=self._blocks)
        txn.put(ns.encode(), _U64.pack(through_seq), db=self._pos)

    def get(self, ns: str, bid: str) -> BlockWritten | None:
        raw = self._env.read(lambda txn: txn.get(self._key(ns, bid), db=self._blocks))
        return _block_decoder.decode(raw) if raw is not None else None

    def get_many(self, ns: str, bids: Iterable[str]) -> dict[str, BlockWritten]:
        cache = self._block_cache
        out: dict[str, BlockWritten] = {}
        keys = []
        for b in bids:
            hit = cache.get((ns, b))
            if hit is not None:
                out[b] = hit
            else:
                keys.append((b, self._key(ns, b)))
        if not keys:
            return out

        def txn_fn(txn: lmdb.Transaction) -> dict[str, BlockWritten]:
            found = {}
            for b, k in keys:
                raw = txn.get(k, db=self._blocks)
                if raw is not None:
                    found[b] = _block_decoder.decode(raw)
            return found

        found = self._env.read(txn_fn)
        if len(cache) + len(found) > CACHE_ENTRIES:
            cache.clear()
        for b, blk in found.items():
            cache[(ns, b)] = blk
        out.update(found)
        return out

    @staticmethod
    def _count_key(tokenizer: str, ns: str, bid: str) -> bytes:
        # Keyed by namespace too: a count is only ever computed from a block's own
        # stored text, and no namespace's blocks can stand in for another's.
        return f"{tokenizer}\x00{ns}\x00{bid}".encode()

    def cached_tokens(self, tokenizer: str, ns: str, bids: Iterable[str]) -> dict[str, int]:
        memo = self._count_cache
        out: dict[str, int] = {}
        keys = []
        for b in bids:
            k = self._count_key(tokenizer, ns, b)
            n = memo.get(k)
            if n is not None:
                out[b] = n
            else:
                keys.append((b, k))
        if not keys:
            return out

        def txn_fn(txn: lmdb.Transaction) -> dict[str, int]:
            found = {}
            for b, k in keys:
                raw = txn.get(k, db=self._tokens)
                if raw is not None:
                    found[b] = _U32.unpack(raw)[0]
            return found

        found = self._env.read(txn_fn)
        self._remember_counts(tokenizer, ns, found)
        out.update(found)
        return out

    def _remember_counts(self, tokenizer: str, ns: str, counts: Mapping[str, int]) -> None:
        memo = self._count_cache
        if len(memo) + len(counts) > CACHE_ENTRIES:
            memo.clear()
        for b, n in counts.items():
            memo[self._count_key(tokenizer, ns, b)] = n

    def cache_tokens(self, tokenizer: str, ns: str, counts: Mapping[str, int]) -> None:
        """Store counts for later processes too (one write transaction: for ingest, not a turn's path)."""
        if not counts:
            return
        self._remember_counts(tokenizer, ns, counts)

        def txn_fn(txn: lmdb.Transaction) -> None:
            for b, n in counts.items():
                txn.put(self._count_key(tokenizer, ns, b), _U32.pack(n), db=self._tokens)

        self._env.write(txn_fn)

    def token_counts(self, ns: str, bids: Iterable[str], tokenizer: Counter) -> dict[str, int]:
        """Token counts of blocks' text under `tokenizer`: stored ones, else counted and kept in memory.

        Counts taken here are not written to the store: a write is a synced
        transaction, too dear on a turn's path for a cache.  Ingest stores
        the counts of the pages it writes (:meth:`cache_tokens`).
        """
        bids = list(bids)
        counts = self.cached_tokens(tokenizer.name, ns, bids)
        missing = [b for b in bids if b not in counts]
        if missing:
            fresh = {b: tokenizer.count(blk.text) for b, blk in self.get_many(ns, missing).items()}
            self._remember_counts(tokenizer.name, ns, fresh)
            counts.update(fresh)
        return counts
