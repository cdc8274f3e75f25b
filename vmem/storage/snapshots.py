"""Snapshots: folded states of a namespace kept in LMDB, so a large home opens without refolding."""

from __future__ import annotations

import struct

from vmem.state.fold import State, decode_snapshot, encode_snapshot
from vmem.storage.lmdb_env import LmdbEnv

_U64 = struct.Struct(">Q")
# Bumped whenever State's encoding changes: a snapshot of another format is a
# cache miss (the namespace is refolded), never a decoding error.
_FORMAT = b"vmem-state-2\x00"


class Snapshots:
    """Folded states of a namespace, each keyed by the sequence it reflects.

    Caches, never the truth: they can all be deleted and rebuilt by folding.
    """

    KEEP = 4  # per namespace; older ones are pruned

    def __init__(self, env: LmdbEnv) -> None:
        self._env = env
        self._db = env.db("snapshots")

    def load(self, ns: str, *, at_most: int | None = None) -> tuple[int, State] | None:
        """The newest snapshot of `ns` (reflecting a sequence <= `at_most`)."""
        prefix = ns.encode() + b"\x00"
        limit = prefix + _U64.pack(at_most if at_most is not None else 2**64 - 1)

        def txn_fn(txn):
            with txn.cursor(db=self._db) as cur:
                if cur.set_range(limit):
                    if cur.key() == limit:
                        return cur.value()
                    if not cur.prev():
                        return None
                elif not cur.last():
                    return None
                return cur.value() if cur.key().startswith(prefix) else None

        raw = self._env.read(txn_fn)
        if raw is None or not raw.startswith(_FORMAT):
            return None
        body = memoryview(raw)[len(_FORMAT):]
        return _U64.unpack_from(body)[0], decode_snapshot(body[8:])

    def save(self, ns: str, seq: int, state: State) -> None:
        prefix = ns.encode() + b"\x00"
        data = _FORMAT + _U64.pack(seq) + encode_snapshot(state)

        def txn_fn(txn):
            txn.put(prefix + _U64.pack(seq), data, db=self._db)
            with txn.cursor(db=self._db) as cur:
                keys = []
                if cur.set_range(prefix):
                    for k in cur.iternext(keys=True, values=False):
                        if not k.startswith(prefix):
                            break
                        keys.append(k)
            for k in keys[: -self.KEEP]:
                txn.delete(k, db=self._db)

        self._env.write(txn_fn)
