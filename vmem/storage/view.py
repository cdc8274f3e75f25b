"""A namespace's live state: the checked fold of its log, kept current by catching up.

Reads are validated (:mod:`vmem.state.validate`): a record that does not decode or
fails its checks is skipped and remembered in :attr:`NamespaceView.rejected`,
by the same rule replay applies, so both fold to the same state.

An actor that appends folds its own events into the view as it decides
(:class:`Draft`), and once the append commits the view simply moves its
position past them: it does not read back what it just wrote.  If the append
fails, :meth:`NamespaceView.reset` drops the speculative state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import anyio

from vmem.errors import CorruptRecord
from vmem.schemas.events import BlockWritten, Event
from vmem.schemas.messages import StoredEvent
from vmem.state.fold import State, apply, fold
from vmem.state.validate import Rejected, check_stored
from vmem.storage.block_store import BlockStore
from vmem.storage.log import Log
from vmem.storage.snapshots import Snapshots

SNAPSHOT_EVERY = 20000
# Events decoded per read while catching up: bounds memory (pages can be
# several KB each) without costing speed (a read is one cursor scan).
CATCH_UP_BATCH = 1024
KEEP_REJECTED = 256

# Told of the events a view folds: (the position before them, the events, the
# position after them).  The positions matter, not the events' count: records
# that fail their checks are skipped, so a batch can cover more than it holds.
Listener = Callable[[int, Sequence[StoredEvent], int], None]


async def checked_batches(
    log: Log,
    ns: str,
    *,
    after: int = 0,
    until: int | None = None,
    batch: int = CATCH_UP_BATCH,
    on_reject: Callable[[Rejected], None],
) -> AsyncIterator[tuple[list[StoredEvent], int]]:
    """The events of `ns` that may be folded, in batches, each with the last sequence it covers.

    Records that do not decode or fail :func:`check_stored` are skipped and
    passed to `on_reject`.  The sequence covered can pass the last event
    yielded (a skipped record at the end of a batch).
    """
    pos = after
    while True:
        try:
            chunk = await log.read(ns, after=pos, limit=batch)
            bad: Rejected | None = None
        except CorruptRecord as exc:
            chunk, bad = await _before_damage(log, ns, pos, exc), Rejected(exc.sequence, f"corrupt record: {exc.detail}")
        if until is not None:
            chunk = [s for s in chunk if s.seq <= until]
        if not chunk and bad is None:
            return
        good = []
        for stored in chunk:
            reason = check_stored(ns, stored.event)
            if reason:
                on_reject(Rejected(stored.seq, reason))
            else:
                good.append(stored)
        covered = chunk[-1].seq if chunk else pos
        if bad is not None and (until is None or bad.seq <= until):
            on_reject(bad)
            covered = bad.seq
        if covered == pos:
            return
        yield good, covered
        pos = covered
        if until is not None and pos >= until:
            return


async def fold_checked(
    log: Log, ns: str, state: State, *, after: int = 0, until: int | None = None,
    on_reject: Callable[[Rejected], None] | None = None,
) -> tuple[int, int]:
    """Fold the checked events of `ns` (after `after`, up to `until`) into `state`: (events folded, last covered).

    What a log without a faster way runs for :meth:`vmem.storage.log.Log.fold_into`.
    """
    n, last = 0, after
    async for batch, covered in checked_batches(log, ns, after=after, until=until, batch=8192,
                                                on_reject=on_reject or (lambda _r: None)):
        fold((s.event for s in batch), state)
        n += len(batch)
        last = covered
    return n, last


async def _before_damage(log: Log, ns: str, after: int, damage: CorruptRecord) -> list[StoredEvent]:
    """The readable events between `after` and a damaged record (read one by one: damage is rare)."""
    out: list[StoredEvent] = []
    while True:
        try:
            one = await log.read(ns, after=after, limit=1)
        except CorruptRecord:
            return out
        if not one or one[0].seq >= damage.sequence:
            return out
        out.append(one[0])
        after = one[0].seq


class NamespaceView:
    """The state of one namespace as of log sequence `pos`.

    Actors of one process share a view.  :meth:`catch_up` folds whatever the
    log holds past `pos`, projects new blocks into the block store, and saves a
    snapshot every ``SNAPSHOT_EVERY`` events so a large home opens quickly.
    Writers hold :attr:`lock` while they decide and append, so nobody reads a
    state that holds events not yet committed.
    """

    def __init__(self, ns: str, log: Log, store: BlockStore, snapshots: Snapshots | None) -> None:
        self.ns = ns
        self._log = log
        self._store = store
        self._snapshots = snapshots
        self.rejected: list[Rejected] = []
        self._lock: anyio.Lock | None = None
        self._listeners: list[Listener] = []
        self._load()

    def _load(self) -> None:
        self.state = State(ns=self.ns)
        self.pos = 0
        self._since_snapshot = 0
        if self._snapshots is not None:
            snap = self._snapshots.load(self.ns)
            if snap is not None:
                self.pos, self.state = snap

    @property
    def lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def watch(self, listener: Listener) -> None:
        """Call `listener` with every batch of events this view folds from now on, committed ones only.

        Both what it reads from the log and what a writer of this process
        settled (without reading it back), so followers of the log (the
        retriever's tail indexes) need not read it again.  After a
        :meth:`reset` the view folds from an earlier position again: a
        listener keeps its own position and skips what it has seen.
        """
        self._listeners.append(listener)

    def unwatch(self, listener: Listener) -> None:
        """Stop calling `listener` (one that :meth:`watch` was given)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _tell(self, before: int, events: Sequence[StoredEvent], after: int) -> None:
        for listener in self._listeners:
            listener(before, events, after)

    def _reject(self, rejected: Rejected) -> None:
        if not any(r.seq == rejected.seq for r in self.rejected):
            self.rejected = [*self.rejected, rejected][-KEEP_REJECTED:]

    async def catch_up(self) -> int:
        """Fold every event past `pos`; returns the new `pos`."""
        async with self.lock:
            return await self.catch_up_locked()

    async def catch_up_locked(self) -> int:
        """:meth:`catch_up` for a caller that holds :attr:`lock`."""
        async for batch, covered in checked_batches(self._log, self.ns, after=self.pos, on_reject=self._reject):
            for stored in batch:
                apply(self.state, stored.event)
            stored_through = self._store.position(self.ns)
            if stored_through < covered:
                blocks = [s.event for s in batch if type(s.event) is BlockWritten and s.seq > stored_through]
                self._store.project(self.ns, blocks, covered)  # type: ignore[arg-type]
            before = self.pos
            self._advanced(covered, len(batch))
            self._tell(before, batch, covered)
        return self.pos

    def _advanced(self, pos: int, events: int) -> None:
        self.pos = pos
        self._since_snapshot += events
        if self._snapshots is not None and self._since_snapshot >= SNAPSHOT_EVERY:
            self._snapshots.save(self.ns, self.pos, self.state)
            self._since_snapshot = 0

    def settle(self, events: Sequence[Event], last_seq: int) -> None:
        """The events a :class:`Draft` folded were committed, ending at `last_seq`."""
        if self._store.position(self.ns) < last_seq:
            self._store.project(self.ns, [e for e in events if type(e) is BlockWritten], last_seq)  # type: ignore[misc]
        before = self.pos
        self._advanced(last_seq, len(events))
        if self._listeners:
            # One append's records have consecutive sequences, ending at last_seq.
            first = last_seq - len(events) + 1
            self._tell(before, [StoredEvent(first + i, e) for i, e in enumerate(events)], last_seq)

    def reset(self) -> None:
        """Forget folded events that were not committed: start again from the newest snapshot."""
        self._load()


class Draft:
    """The events an actor is about to append, folded into the view as they are added.

    Deciding in steps (start a turn, then page in on the state that holds
    the turn's message) needs the state after the first step; a draft gives
    exactly that without a second transaction.  Used under the view's lock.
    """

    def __init__(self, view: NamespaceView) -> None:
        self.view = view
        self.events: list[Event] = []

    @property
    def state(self) -> State:
        return self.view.state

    @property
    def ns(self) -> str:
        return self.view.ns

    def add(self, events: Sequence[Event]) -> None:
        for event in events:
            apply(self.view.state, event)
        self.events.extend(events)
