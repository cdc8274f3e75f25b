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
        keys = [(b, self._key(ns, b)) for b in bids]

        def txn_fn(txn: lmdb.Transaction) -> dict[str, BlockWritten]:
            out = {}
            for b, k in keys:
                raw = txn.get(k, db=self._blocks)
                if raw is not None:
                    out[b] = _block_decoder.decode(raw)
            return out

        return self._env.read(txn_fn)

    @staticmethod
    def _count_key(tokenizer: str, ns: str, bid: str) -> bytes:
        # Keyed by namespace too: a count is only ever computed from a block's own
        # stored text, and no namespace's blocks can stand in for another's.
        return f"{tokenizer}\x00{ns}\x00{bid}".encode()

    def cached_tokens(self, tokenizer: str, ns: str, bids: Iterable[str]) -> dict[str, int]:
        keys = [(b, self._count_key(tokenizer, ns, b)) for b in bids]

        def txn_fn(txn: lmdb.Transaction) -> dict[str, int]:
            out = {}
            for b, k in keys:
                raw = txn.get(k, db=self._tokens)
                if raw is not None:
                    out[b] = _U32.unpack(raw)[0]
            return out

        return self._env.read(txn_fn)

    def cache_tokens(self, tokenizer: str, ns: str, counts: Mapping[str, int]) -> None:
        if not counts:
            return

        def txn_fn(txn: lmdb.Transaction) -> None:
            for b, n in counts.items():
                txn.put(self._count_key(tokenizer, ns, b), _U32.pack(n), db=self._tokens)

        self._env.write(txn_fn)

    def token_counts(self, ns: str, bids: Iterable[str], tokenizer: Counter) -> dict[str, int]:
        """Token counts of blocks' text under `tokenizer`, counted once and cached."""
        bids = list(bids)
        counts = self.cached_tokens(tokenizer.name, ns, bids)
        missing = [b for b in bids if b not in counts]
        if missing:
            fresh = {b: tokenizer.count(blk.text) for b, blk in self.get_many(ns, missing).items()}
            self.cache_tokens(tokenizer.name, ns, fresh)
            counts.update(fresh)
        return counts
