"""The event log interface: append-only, per-namespace streams of events.

Sequences are positions in the whole log (as JetStream's stream sequence),
strictly increasing, shared by all namespaces of a home.  ``expected_last``
names the sequence of the namespace's last event the writer saw, exactly
JetStream's *expected last subject sequence*.  State never depends on the
numeric value of a sequence, only on the order of a namespace's events, so two
backends that number differently still fold to the same state hash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from vmem.errors import UsageError
from vmem.schemas.codec import encode_record
from vmem.schemas.events import Event
from vmem.schemas.messages import StoredEvent
from vmem.state.fold import State
from vmem.state.namespace import validate_namespace
from vmem.state.validate import Rejected

__all__ = ["AppendResult", "Log", "StoredEvent", "encode_batch", "read_all"]


class AppendResult(msgspec.Struct, frozen=True):
    """Sequences given to an appended batch; `duplicate` when an idempotent retry."""

    first_seq: int
    last_seq: int
    duplicate: bool = False


@runtime_checkable
class Log(Protocol):
    """An immutable, durable event log.  Implementations: LMDB, JetStream."""

    async def append(
        self,
        ns: str,
        events: Sequence[Event],
        *,
        key: str | None = None,
        expected_last: int | None = None,
    ) -> AppendResult:
        """Append a batch atomically and durably.

        `key` makes the append idempotent: a retry with the same key commits
        nothing and returns the first result with ``duplicate=True``.
        `expected_last` (0 for an empty namespace) raises ConcurrencyConflict
        when the namespace's last sequence differs.
        """
        ...

    async def read(self, ns: str, *, after: int = 0, limit: int = 4096) -> list[StoredEvent]:
        """Up to `limit` events of `ns` with sequence greater than `after`, in order."""
        ...

    async def last_seq(self, ns: str) -> int:
        """Sequence of the namespace's last event, 0 if it has none."""
        ...

    async def read_last(self, ns: str, n: int) -> list[StoredEvent]:
        """The last `n` events of `ns`, oldest first."""
        ...

    async def fold_into(
        self, ns: str, state: State, *, after: int = 0, until: int | None = None,
        on_reject: Callable[[Rejected], None] | None = None,
    ) -> tuple[int, int]:
        """Fold the events of `ns` after `after` (up to `until`) into `state`: (events folded, last sequence covered).

        Replay's path: records that do not decode or fail
        :func:`vmem.state.validate.check_stored` are skipped and passed to
        `on_reject`, by the same rule the live view applies.
        """
        ...

    def follow(self, ns: str, *, after: int = 0) -> AsyncIterator[StoredEvent]:
        """Every event of `ns` after `after`, then wait for new ones, forever."""
        ...

    async def namespaces(self) -> list[str]:
        """Namespaces with at least one event, sorted."""
        ...

    async def aclose(self) -> None: ...


def encode_batch(ns: str, events: Sequence[Event]) -> list[bytes]:
    """Check a batch for `ns` and return its stored records; every Log refuses the same batches.

    InvalidNamespace for a bad namespace, UsageError for an empty batch or an
    event of another namespace.
    """
    validate_namespace(ns)
    if not events:
        raise UsageError("append needs at least one event")
    for ev in events:
        if ev.ns != ns:
            raise UsageError(f"event {type(ev).__name__} carries namespace {ev.ns!r}, not {ns!r}")
    try:
        return [encode_record(ev) for ev in events]
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"an event's text is not valid Unicode ({exc.reason} at position {exc.start}); "
            f"replace unpaired surrogates before appending"
        ) from None


async def read_all(log: Log, ns: str, *, after: int = 0, until: int | None = None, batch: int = 8192):
    """Iterate a namespace's events in batches (lists), up to sequence `until`."""
    while True:
        chunk = await log.read(ns, after=after, limit=batch)
        if until is not None:
            chunk = [e for e in chunk if e.seq <= until]
        if not chunk:
            return
        yield chunk
        after = chunk[-1].seq
        if until is not None and after >= until:
            return
