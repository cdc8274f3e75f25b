"""The JetStream log's head cache: what a reader has heard of a tenant's appends, so it need not ask.

Each log stream announces every frame it stores, headers only, on
``<prefix>.<tenant>.<agent>.head`` (JetStream republish).  A log watching a
tenant's announcements knows when a namespace has had no new frame since its
last read, and answers that read (the common "catch up: anything new?")
without a round trip; it also reads back its own last append locally when
the server confirmed it directly followed the caller's ``expected_last``.
A reconnect (or a slow-consumer drop) starts a new epoch and forgets it all.

nats-server announces a frame as it stores it, before acknowledging it, so a
process that hears of an append through NATS (a request sent after the
append) has heard its announcement first; this order is tested
(tests/test_log_jetstream.py), for one server.  For a cluster, or readers
told of appends out of band, ``enabled=False`` makes every read ask.
"""

from __future__ import annotations

from typing import Any

import anyio
from nats import errors as nats_errors
from nats.aio.msg import Msg as NatsMsg

from vmem.bus.subjects import Subjects
from vmem.errors import AccessDenied, UsageError
from vmem.nats.connection import NatsConnection
from vmem.nats.frames import stream_seq_of_last
from vmem.schemas.events import Event
from vmem.schemas.messages import StoredEvent
from vmem.storage.log import AppendResult


class HeadCache:
    """See the module docstring."""

    def __init__(self, conn: NatsConnection, subjects: Subjects, *, enabled: bool = True) -> None:
        self._conn = conn
        self._subjects = subjects
        self.enabled = enabled
        self.epoch = 0
        self._heads: dict[str, tuple[int, int]] = {}  # ns -> (no frame above this stream seq, epoch)
        self._announced: dict[str, int] = {}  # ns -> highest stream seq announced this epoch
        # ns -> (expected_last, result, events) of this log's last append made with expected_last:
        # the server vouched that nothing lay between, so reading it back needs no round trip.
        self._own: dict[str, tuple[int, AppendResult, list[Event]]] = {}
        self._watching: dict[str, Any] = {}  # tenant -> subscription to its appends' announcements
        self._changed: dict[str, anyio.Event] = {}  # ns -> set when an append to it is announced
        self._unlisten = conn.on_reconnect(self.forget)
        self.local_reads = 0
        """Reads answered without asking the server."""

    async def watch(self, tenant: str, *, announced: bool) -> int | None:
        """Follow `tenant`'s announcements (if its stream makes them); the epoch they count for, else None."""
        if not self.enabled:
            return None
        if tenant not in self._watching:
            if not announced:
                self._watching[tenant] = None  # an older stream without announcements: always read
            else:
                pattern = self._subjects.tenant_heads(tenant)
                try:
                    sub = await self._conn.nc.subscribe(pattern, cb=self._on_head, pending_msgs_limit=0, pending_bytes_limit=0)
                    await self._conn.barrier()
                    self._conn.check_violations(pattern)
                except (nats_errors.Error, OSError, AccessDenied):
                    sub = None
                self._watching[tenant] = sub
        return self.epoch if self._watching[tenant] is not None else None

    async def _on_head(self, msg: NatsMsg) -> None:
        try:
            seq = int(msg.headers["Nats-Sequence"]) if msg.headers else 0
            ns = self._subjects.namespace_of(msg.subject)
        except (KeyError, ValueError, UsageError):  # a stray message is no announcement
            return
        if seq > self._announced.get(ns, 0):
            self._announced[ns] = seq
        known = self._heads.get(ns)
        if known is not None and known[1] == self.epoch and seq > known[0]:
            self._heads[ns] = (seq, self.epoch)
        event = self._changed.pop(ns, None)
        if event is not None:
            event.set()

    def raise_head(self, ns: str, seq: int, epoch: int | None) -> None:
        """Record that `ns` had no frame above stream sequence `seq` when a read or append of `epoch` ended.

        `epoch` is None when the tenant was not watched as that call began:
        appends announced meanwhile may have gone unheard, so nothing is recorded.
        """
        if epoch is None or epoch != self.epoch:
            return
        known = self._heads.get(ns)
        top = max(seq, self._announced.get(ns, 0), known[0] if known is not None and known[1] == epoch else 0)
        self._heads[ns] = (top, epoch)

    def drop(self, ns: str) -> None:
        """Another writer got in: read `ns` from the server again."""
        self._heads.pop(ns, None)

    def forget(self) -> None:
        """After a reconnect or a dropped message, announcements may have been missed."""
        self.epoch += 1
        self._heads.clear()
        self._announced.clear()
        self._own.clear()
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    def nothing_from(self, ns: str, start: int) -> bool:
        """Whether `ns` surely has no frame at or above stream sequence `start` (no need to ask)."""
        known = self._heads.get(ns)
        if known is not None and known[1] == self.epoch and start > known[0]:
            self.local_reads += 1
            return True
        return False

    def own_after(self, ns: str, after: int) -> list[StoredEvent] | None:
        """The events of this log's own last append after `after`, if that append is still the namespace's last."""
        known = self._heads.get(ns)
        own = self._own.get(ns)
        if known is None or known[1] != self.epoch or own is None:
            return None
        expected_last, result, events = own
        if known[0] != stream_seq_of_last(result.last_seq) or not expected_last <= after < result.last_seq:
            return None
        first = result.first_seq
        self.local_reads += 1
        return [StoredEvent(first + i, e) for i, e in enumerate(events) if first + i > after]

    def remember_own(self, ns: str, expected_last: int, result: AppendResult, events: list[Event]) -> None:
        self._own[ns] = (expected_last, result, events)

    def changed(self, ns: str) -> anyio.Event:
        """An event set when an append to `ns` is announced (or the cache forgets)."""
        return self._changed.setdefault(ns, anyio.Event())

    def settled(self, ns: str, event: anyio.Event) -> None:
        if event.is_set() and self._changed.get(ns) is event:
            del self._changed[ns]

    async def aclose(self) -> None:
        self._unlisten()
        subs = [s for s in self._watching.values() if s is not None]
        self._watching.clear()
        self.forget()
        for sub in subs:
            if not self._conn.closed:
                try:
                    await sub.unsubscribe()
                except (nats_errors.Error, OSError):
                    pass
