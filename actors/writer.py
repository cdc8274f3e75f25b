"""The actors' one way into the log: decide on the live state, append as of it, tell watchers.

:meth:`Writer.commit` runs a decision under the namespace view's lock: the
decision folds the events it makes into the view as it goes (a
:class:`~vmem.storage.view.Draft`), and they are appended with ``expected_last``
set to the position they were decided at.  If another writer got in first
the log refuses the append, the view drops what it folded, catches up and the
decision is made again; if the append commits, the view moves past it
without reading it back.  Then the events are published on
``vmem.<tenant>.<agent>.events`` for watchers (at most once: watchers also
read what they missed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio

from vmem.bus.bus import Bus
from vmem.bus.subjects import Subjects
from vmem.errors import BusError, ConcurrencyConflict, UsageError
from vmem.schemas.codec import encode
from vmem.schemas.events import ErrorRaised, Event
from vmem.schemas.messages import EventsCommitted, StoredEvent
from vmem.storage.home import Home
from vmem.storage.log import AppendResult
from vmem.storage.view import Draft

T = TypeVar("T")
ATTEMPTS = 16
# After a conflict, wait a random fraction of this (doubling per conflict, up
# to the cap) before deciding again: writers that keep colliding on one
# namespace (compressor workers in several processes) otherwise starve each
# other.  Timing only: what is decided and appended does not depend on it.
BACKOFF_S = 0.001
BACKOFF_CAP_S = 0.05
_jitter = random.Random()
NOTIFY_BYTES = 64 * 1024  # larger batches are announced without their events; watchers read them


class Writer:
    """Appends for the actors of one runtime (see the module docstring)."""

    def __init__(self, home: Home, bus: Bus | None = None, subjects: Subjects | None = None) -> None:
        self.home = home
        self.bus = bus
        self.subjects = subjects or Subjects()

    async def commit(
        self,
        ns: str,
        decide: Callable[[Draft], T],
        *,
        key: str | None = None,
        attempts: int = ATTEMPTS,
        conditional: bool = True,
    ) -> tuple[T, AppendResult | None]:
        """Append what `decide` adds to its draft, as of the state it decided on; returns its result.

        Nothing is appended if the decision adds no events.  A keyed append
        that was committed before (a retry) leaves the log as it was; the
        view then reads back what the first one wrote.  ``conditional=False``
        appends whatever came in between: only for events whose fold neither
        depends on the state nor changes it twice (a compressor's summary),
        so writers that would only collide need not retry.
        """
        view = self.home.view(ns)
        async with view.lock:
            base = view.pos
            for attempt in range(attempts):
                if attempt:
                    await anyio.sleep(_jitter.random() * min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (attempt - 1)))
                await view.catch_up_locked()
                base = view.pos
                draft = Draft(view)
                try:
                    out = decide(draft)
                    if not draft.events:
                        return out, None
                    result = await self.home.log.append(ns, draft.events, key=key,
                                                        expected_last=base if conditional else None)
                except ConcurrencyConflict:
                    view.reset()
                    continue
                except BaseException:
                    if draft.events:
                        view.reset()
                    raise
                if not conditional and not result.duplicate and not await self._directly_after(ns, base, result):
                    # Others appended in between: the view folds the log's order, not ours.
                    await self._announce(ns, -1, result, draft.events)
                    view.reset()
                    await view.catch_up_locked()
                    return out, result
                if result.duplicate:  # the view reads back what the first append wrote
                    view.reset()
                    await view.catch_up_locked()
                    return out, result
                view.settle(draft.events, result.last_seq)
                await self._announce(ns, base, result, draft.events)
                return out, result
        raise ConcurrencyConflict(ns, base, await self.home.log.last_seq(ns))

    async def _directly_after(self, ns: str, base: int, result: AppendResult) -> bool:
        """Whether an unconditional append landed right after `base` (nothing of `ns` in between)."""
        first = await self.home.log.read(ns, after=base, limit=1)
        return bool(first) and first[0].seq == result.first_seq

    async def append(self, ns: str, events: Sequence[Event], *, key: str | None = None) -> AppendResult | None:
        """Append fixed events (no decision on the state), as of the current state."""
        _out, result = await self.commit(ns, lambda draft: draft.add(events), key=key)
        return result

    async def record_error(self, ns: str, where: str, message: str) -> None:
        """Record an internal error of a request as an event of its namespace (the runtime's `record`)."""
        turn = self.home.view(ns).state.turn
        await self.append(ns, [ErrorRaised(ns=ns, turn=turn, where=where, code="internal", message=message)])

    async def _announce(self, ns: str, prev: int, result: AppendResult, events: Sequence[Event]) -> None:
        if self.bus is None:
            return
        stored = tuple(StoredEvent(result.first_seq + i, e) for i, e in enumerate(events))
        note = EventsCommitted(ns=ns, first=result.first_seq, last=result.last_seq, prev=prev, events=stored)
        data = encode(note)
        if len(data) > NOTIFY_BYTES:
            data = encode(EventsCommitted(ns=ns, first=result.first_seq, last=result.last_seq, prev=prev))
        try:
            await self.bus.publish(self.subjects.events(ns), data)
        except (BusError, UsageError):
            pass  # at most once: watchers read what they missed
