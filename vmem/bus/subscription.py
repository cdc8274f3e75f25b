"""What both buses' subscriptions share: a bounded buffer of delivered messages, iterated.

A subscriber that falls behind loses messages rather than holding the
publisher or the process's memory: each subscription buffers at most
`pending_limit` messages and `pending_bytes` bytes of payload, and drops (and
counts) what would exceed either, like the NATS client's slow-consumer
handling.  Delivery into the buffer is synchronous; taking from it is the
async iteration.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Self

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from vmem.bus.bus import Msg
from vmem.errors import UsageError

DEFAULT_PENDING_LIMIT = 65536
"""Messages a subscription may buffer before further ones are dropped for it."""
DEFAULT_PENDING_BYTES = 64 * 2**20
"""Payload bytes a subscription may buffer before further messages are dropped for it."""


def check_limit(limit: int, what: str = "pending_limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"{what} must be a positive int, got {limit!r}")
    return limit


class BufferedSubscription:
    """A subscription's buffer and iteration; a bus subclasses it with how to unsubscribe."""

    def __init__(self, pattern: str, queue: str | None, pending_limit: int, pending_bytes: int = DEFAULT_PENDING_BYTES) -> None:
        self._pattern = pattern
        self._queue = queue
        self._limit = pending_limit
        self._byte_limit = pending_bytes
        self._pending: deque[Msg] = deque()
        self._bytes = 0
        self._dropped = 0
        self._closed = False
        # One event shared by all waiting iterators, created only while someone
        # waits so a busy subscription does not allocate one per message.
        self._wakeup: anyio.Event | None = None

    @property
    def pattern(self) -> str:
        """The subject pattern this subscription was made with."""
        return self._pattern

    @property
    def queue(self) -> str | None:
        """The queue group this subscription belongs to, if any."""
        return self._queue

    @property
    def pending(self) -> int:
        """Messages delivered to this subscription and not yet taken."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Payload bytes delivered to this subscription and not yet taken."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Messages discarded because a pending limit was reached (slow consumer)."""
        return self._dropped

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Msg:
        await checkpoint_if_cancelled()
        waited = False
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                msg = self._pending.popleft()
                self._bytes -= len(msg.data)
                if not waited:
                    # Yield once anyway so a consumer that never runs dry still
                    # lets other tasks run; shielded so the message is not lost.
                    await cancel_shielded_checkpoint()
                return msg
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
            waited = True

    async def unsubscribe(self) -> None:
        """Stop delivery and end iteration, discarding buffered messages.  Idempotent."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()

    def _has_room(self, msg: Msg) -> bool:
        return not self._closed and len(self._pending) < self._limit and self._bytes + len(msg.data) <= self._byte_limit

    def _offer(self, msg: Msg) -> bool:
        """Buffer `msg` unless closed or full; say whether it was taken."""
        if not self._has_room(msg):
            return False
        self._pending.append(msg)
        self._bytes += len(msg.data)
        self._wake()
        return True

    def _close(self) -> None:
        self._closed = True
        self._pending.clear()
        self._bytes = 0
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
