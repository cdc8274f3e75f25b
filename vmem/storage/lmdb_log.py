"""The event log on LMDB: durable, idempotent, optimistic, and multi-process safe."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence

import anyio
import lmdb

from vmem.errors import ConcurrencyConflict, CorruptRecord, SchemaError
from vmem.schemas.codec import decode_record
from vmem.schemas.events import Event
from vmem.state.fold import _FOLD as FOLD_TABLE
from vmem.state.namespace import validate_namespace
from vmem.state.validate import Rejected, check_stored
from vmem.storage.lmdb_env import LmdbEnv
from vmem.storage.log import AppendResult, StoredEvent, encode_batch

if TYPE_CHECKING:
    from vmem.state.fold import State

_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")
_SEQ_KEY = b"seq"
# How often a follower re-reads when no append of this process woke it:
# appends by other processes are only seen by polling.
_POLL_S = 0.05


def _prefix(ns: str) -> bytes:
    return ns.encode() + b"\x00"


class LmdbLog:
    """:class:`~vmem.storage.log.Log` on an LMDB environment.

    Records are keyed ``namespace NUL sequence`` so a namespace reads as one
    cursor range.  An append is one write transaction: the idempotency check,
    the expected-sequence check, the records and the heads commit together, so
    a crash leaves either all of a batch or none of it.
    """

    def __init__(
        self,
        env: LmdbEnv,
        *,
        project: Callable[[lmdb.Transaction, str, Sequence[Event], int], None] | None = None,
        owns_env: bool = False,
    ) -> None:
        self._env = env
        self._owns_env = owns_env
        self._events = env.db("events")
        self._heads = env.db("heads")
        self._idem = env.db("idempotency")
        self._meta = env.db("log_meta")
        self._limiter: anyio.CapacityLimiter | None = None
        self._appended: anyio.Event | None = None
        # A projection kept in the append's own transaction (the home's block
        # store): it commits with the events or not at all.
        self._project = project

    @classmethod
    def open(cls, path: Path) -> "LmdbLog":
        """A log on an environment of its own (closed with the log)."""
        return cls(LmdbEnv(path), owns_env=True)

    # -- writing -----------------------------------------------------------

    async def append(
        self,
        ns: str,
        events: Sequence[Event],
        *,
        key: str | None = None,
        expected_last: int | None = None,
    ) -> AppendResult:
        records = encode_batch(ns, events)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        # The commit fsyncs (about a millisecond): keep it off the event loop.
        result = await anyio.to_thread.run_sync(
            self.append_sync, ns, records, key, expected_last, events, limiter=self._limiter
        )
        if self._appended is not None:
            self._appended.set()
            self._appended = None
        return result


    def append_sync(
        self,
        ns: str,
        records: list[bytes],
        key: str | None,
        expected_last: int | None,
        events: Sequence[Event] = (),
    ) -> AppendResult:
        """Blocking append of already-encoded records (see :meth:`append`)."""
        prefix = _prefix(ns)
        nskey = ns.encode()
        idem_key = prefix + key.encode() if key is not None else None

        def txn_fn(txn: lmdb.Transaction) -> AppendResult:
            if idem_key is not None:
                seen = txn.get(idem_key, db=self._idem)
                if seen is not None:
                    first, last = _U64x2.unpack(seen)
                    return AppendResult(first, last, duplicate=True)
            head_raw = txn.get(nskey, db=self._heads)
            head = _U64.unpack(head_raw)[0] if head_raw else 0
            if expected_last is not None and expected_last != head:
                raise ConcurrencyConflict(ns, expected_last, head)
            seq_raw = txn.get(_SEQ_KEY, db=self._meta)
            seq = _U64.unpack(seq_raw)[0] if seq_raw else 0
            first = seq + 1
            with txn.cursor(db=self._events) as cur:
                # Sequences only grow, so a taken key means the counter is
                # damaged: overwrite=False turns that into an error, not a loss.
                for rec in records:
                    seq += 1
                    if not cur.put(prefix + _U64.pack(seq), rec, overwrite=False):
                        raise CorruptRecord(seq, "sequence already taken; the log's counter is damaged")
            txn.put(_SEQ_KEY, _U64.pack(seq), db=self._meta)
            txn.put(nskey, _U64.pack(seq), db=self._heads)
            if idem_key is not None:
                txn.put(idem_key, _U64x2.pack(first, seq), db=self._idem)
            if self._project is not None:
                self._project(txn, ns, events, seq)
            return AppendResult(first, seq)

        return self._env.write(txn_fn)

    # -- reading -----------------------------------------------------------

    async def read(self, ns: str, *, after: int = 0, limit: int = 4096) -> list[StoredEvent]:
        return self.read_sync(ns, after=after, limit=limit)

    def read_sync(self, ns: str, *, after: int = 0, limit: int = 4096) -> list[StoredEvent]:
        """Blocking read (a memory-mapped cursor scan; no I/O wait in the common case)."""
        prefix = _prefix(validate_namespace(ns))
        plen = len(prefix)
        out: list[StoredEvent] = []

        def txn_fn(txn: lmdb.Transaction) -> None:
            with txn.cursor(db=self._events) as cur:
                if not cur.set_range(prefix + _U64.pack(after + 1)):
                    return
                unpack = _U64.unpack_from
                append = out.append
                for k, v in cur:
                    if not k.startswith(prefix) or len(out) >= limit:
                        return
                    seq = unpack(k, plen)[0]
                    try:
                        append(StoredEvent(seq, decode_record(v)))
                    except SchemaError as exc:
                        raise CorruptRecord(seq, exc.message.split(": ", 1)[-1]) from None

        self._env.read(txn_fn)
        return out

    async def fold_into(
        self, ns: str, state: "State", *, after: int = 0, until: int | None = None,
        on_reject: Callable[["Rejected"], None] | None = None, chunk: int = 50_000,
    ) -> tuple[int, int]:
        """Decode, check and fold a namespace's events straight from the map into `state`.

        Replay's fast path: no intermediate lists or StoredEvent objects, and
        read transactions of at most `chunk` records so a long replay does
        not pin old pages.  Records that do not decode or fail
        :func:`vmem.state.validate.check_stored` are skipped and passed to
        `on_reject`, as the live view skips them.  Returns (events folded,
        last sequence covered).
        """
        prefix = _prefix(validate_namespace(ns))
        plen = len(prefix)
        stop = until if until is not None else 2**64 - 1
        table = FOLD_TABLE
        check = check_stored
        reject = on_reject or (lambda _r: None)
        folded = 0
        last = after

        def txn_fn(txn: lmdb.Transaction) -> int:
            nonlocal last, folded
            n = 0
            clock = state.clock
            with txn.cursor(db=self._events) as cur:
                if not cur.set_range(prefix + _U64.pack(last + 1)):
                    return 0
                unpack = _U64.unpack_from
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    seq = unpack(k, plen)[0]
                    if seq > stop:
                        break
                    last = seq
                    n += 1
                    try:
                        event = decode_record(v)
                        reason = check(ns, event)
                    except SchemaError as exc:
                        reason = f"corrupt record: {exc.message.split(': ', 1)[-1]}"
                    if reason:
                        reject(Rejected(seq, reason))
                    else:
                        table[type(event)](state, event)
                        clock += 1
                        state.clock = clock
                        folded += 1
                    if n >= chunk:
                        break
            return n

        while True:
            n = self._env.read(txn_fn)
            if n < chunk:
                return folded, last

    async def read_last(self, ns: str, n: int) -> list[StoredEvent]:
        """The last `n` events of `ns`, oldest first (a reverse cursor scan)."""
        prefix = _prefix(validate_namespace(ns))
        plen = len(prefix)
        out: list[StoredEvent] = []

        def txn_fn(txn: lmdb.Transaction) -> None:
            with txn.cursor(db=self._events) as cur:
                # Position after the namespace's last key, then walk back.
                if cur.set_range(prefix + b"\xff" * 8):
                    if not cur.prev():
                        return
                elif not cur.last():
                    return
                for k, v in cur.iterprev():
                    if not k.startswith(prefix) or len(out) >= n:
                        return
                    seq = _U64.unpack_from(k, plen)[0]
                    try:
                        out.append(StoredEvent(seq, decode_record(v)))
                    except SchemaError as exc:
                        raise CorruptRecord(seq, exc.message.split(": ", 1)[-1]) from None

        if n > 0:
            self._env.read(txn_fn)
        return out[::-1]

    async def last_seq(self, ns: str) -> int:
        return self.last_seq_sync(ns)

    def last_seq_sync(self, ns: str) -> int:
        nskey = validate_namespace(ns).encode()
        raw = self._env.read(lambda txn: txn.get(nskey, db=self._heads))
        return _U64.unpack(raw)[0] if raw else 0

    async def follow(self, ns: str, *, after: int = 0) -> AsyncIterator[StoredEvent]:
        while True:
            batch = self.read_sync(ns, after=after)
            for stored in batch:
                yield stored
            if batch:
                after = batch[-1].seq
                continue
            if self._appended is None:
                self._appended = anyio.Event()
            with anyio.move_on_after(_POLL_S):
                await self._appended.wait()

    async def namespaces(self) -> list[str]:
        def txn_fn(txn: lmdb.Transaction) -> list[str]:
            with txn.cursor(db=self._heads) as cur:
                return sorted(k.decode() for k in cur.iternext(keys=True, values=False))

        return self._env.read(txn_fn)

    def raw_record(self, ns: str, seq: int) -> bytes | None:
        """The stored bytes at (ns, seq); for diagnostics and corruption tests."""
        return self._env.read(lambda txn: txn.get(_prefix(ns) + _U64.pack(seq), db=self._events))

    def put_raw_record(self, ns: str, seq: int, data: bytes) -> None:
        """Overwrite a stored record.  Only for tests that simulate disk corruption."""
        self._env.write(lambda txn: txn.put(_prefix(ns) + _U64.pack(seq), data, db=self._events))

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the log, and its environment if it opened it (a home closes its own)."""
        if self._owns_env:
            self._env.close()
