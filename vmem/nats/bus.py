"""The :class:`~vmem.bus.bus.Bus` over NATS (nats-py), on a shared :class:`~vmem.nats.connection.NatsConnection`.

:class:`NatsBus` has the semantics of :class:`~vmem.bus.local.LocalBus`
(the same conformance suite; the same validators, so both refuse the same
subjects, patterns, queue names, headers and payloads).  What differs:

* Delivery is asynchronous and, for queue groups, up to the server (random
  among members, not round-robin).
* A subscriber buffers at most ``pending_limit`` messages; more are dropped
  and counted (:attr:`NatsSubscription.dropped`), like a NATS slow consumer.
* While the connection is down, :meth:`NatsBus.publish` and
  :meth:`NatsBus.request` raise :class:`~vmem.errors.BusError` at once;
  subscriptions resume after the reconnect (messages published meanwhile are
  lost: delivery is at most once).
* A publish the server refuses is dropped by the server; the refusal arrives
  later and is raised by the next :meth:`NatsBus.flush`.  A refused
  subscription or request raises :class:`~vmem.errors.AccessDenied` at once.
* Messages that JetStream delivers (they carry a ``Nats-Stream`` header) are
  dropped: a client allowed to read one stream can have the server send that
  stream's messages, whose content it chose, to any subject, by naming it as
  the reply subject of a direct get; the bus must not take them for requests
  (counted in :attr:`NatsSubscription.refused`).

asyncio only: nats-py is built on asyncio, so connecting under trio raises
:class:`~vmem.errors.UsageError`.  The embedded runtime (LocalBus, LmdbLog)
keeps working on trio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled
from nats import errors as nats_errors
from nats.aio.msg import Msg as NatsMsg

from vmem.bus.bus import (
    BusContext,
    Msg,
    validate_data,
    validate_headers,
    validate_pattern,
    validate_queue,
    validate_subject,
    validate_timeout,
)
from vmem.bus.subscription import (
    DEFAULT_PENDING_BYTES,
    DEFAULT_PENDING_LIMIT,
    BufferedSubscription,
    check_limit,
)
from vmem.errors import AccessDenied, BusError, UsageError
from vmem.nats.connection import NatsConnection

__all__ = ["NatsBus", "NatsSubscription"]


class NatsSubscription(BufferedSubscription):
    """A subscription on a :class:`NatsBus`; iterate it to receive messages."""

    def __init__(self, bus: NatsBus, pattern: str, queue: str | None, pending_limit: int,
                 pending_bytes: int = DEFAULT_PENDING_BYTES) -> None:
        super().__init__(pattern, queue, pending_limit, pending_bytes)
        self._bus = bus
        self._refused = 0
        self._nsub: Any = None

    @property
    def refused(self) -> int:
        """Messages discarded because JetStream, not a client, sent them (see the module docstring)."""
        return self._refused

    async def unsubscribe(self) -> None:
        """Stop delivery and end iteration, discarding buffered messages.  Idempotent."""
        if not self._closed:
            self._close()
            self._bus._subs.discard(self)
            nsub, self._nsub = self._nsub, None
            if nsub is not None and not self._bus._conn.closed:
                with anyio.CancelScope(shield=True):
                    try:
                        await nsub.unsubscribe()
                    except (nats_errors.ConnectionClosedError, nats_errors.BadSubscriptionError,
                            nats_errors.ConnectionReconnectingError):
                        pass  # gone with the connection; the server forgets it too
        await cancel_shielded_checkpoint()

    async def _on_msg(self, m: NatsMsg) -> None:
        # Called by nats-py's delivery task, one message at a time.
        if self._closed:
            return
        if m.headers and "Nats-Stream" in m.headers:
            # Sent by JetStream, not by a client: whoever may read a stream can make
            # the server deliver its messages to any subject (the reply subject of a
            # direct get).  Such a message is never a bus message.
            self._refused += 1
            return
        headers = {str(k): v for k, v in m.headers.items()} if m.headers else None
        if not self._offer(Msg(m.subject, m.data, m.reply or None, headers)):
            self._dropped += 1

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pending={len(self._pending)}"
        return f"<NatsSubscription {self._pattern!r} queue={self._queue!r} {state}>"


class NatsBus(BusContext):
    """A :class:`~vmem.bus.bus.Bus` on a NATS connection; see the module docstring.

    ``NatsBus(conn)`` shares a :class:`NatsConnection` and leaves it open on
    close; ``await NatsBus.connect(url)`` owns its connection.
    """

    def __init__(self, conn: NatsConnection, *, pending_limit: int = DEFAULT_PENDING_LIMIT, owns: bool = False) -> None:
        if isinstance(pending_limit, bool) or not isinstance(pending_limit, int) or pending_limit < 1:
            raise UsageError(f"pending_limit must be a positive int, got {pending_limit!r}")
        self._conn = conn
        self._owns = owns
        self._default_limit = pending_limit
        self._subs: set[NatsSubscription] = set()
        self._requests: set[anyio.CancelScope] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str | Sequence[str], **options: Any) -> "NatsBus":
        """A bus on a connection of its own (options as for :meth:`NatsConnection.connect`)."""
        return cls(await NatsConnection.connect(url, **options), owns=True)

    @property
    def connection(self) -> NatsConnection:
        return self._conn

    @property
    def closed(self) -> bool:
        return self._closed

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send `data` to every matching subscription; never waits for subscribers."""
        await checkpoint_if_cancelled()
        self._check_open()
        validate_subject(subject)
        if reply is not None:
            validate_subject(reply)
        payload = validate_data(data)
        hdrs = validate_headers(headers)
        try:
            await self._conn.nc.publish(subject, payload, reply=reply or "", headers=hdrs)
        except (nats_errors.ConnectionClosedError, nats_errors.OutboundBufferLimitError,
                nats_errors.ConnectionReconnectingError, nats_errors.ConnectionDrainingError) as exc:
            raise BusError(
                f"cannot publish to {subject!r}: the NATS connection to {self._conn.url} is down "
                f"({type(exc).__name__}); retry once it reconnects"
            ) from None
        except nats_errors.MaxPayloadError:
            raise UsageError(
                f"message of {len(payload)} bytes on {subject!r} exceeds the server's max_payload "
                f"({self._conn.max_payload} bytes)"
            ) from None

    async def subscribe(
        self, pattern: str, *, queue: str | None = None, pending_limit: int | None = None,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> NatsSubscription:
        """Subscribe to `pattern`, optionally in queue group `queue`.

        Waits for the server to accept the subscription (one round trip), so
        a refused one raises AccessDenied here.
        """
        await checkpoint_if_cancelled()
        self._check_open()
        validate_pattern(pattern)
        validate_queue(queue)
        if pending_limit is not None:
            check_limit(pending_limit)
        sub = NatsSubscription(self, pattern, queue, pending_limit or self._default_limit,
                               check_limit(pending_bytes, "pending_bytes"))
        try:
            sub._nsub = await self._conn.nc.subscribe(
                pattern, queue=queue or "", cb=sub._on_msg, pending_msgs_limit=0, pending_bytes_limit=0
            )
            self._subs.add(sub)
            if self._conn.connected:
                await self._conn.barrier()
        except (nats_errors.ConnectionClosedError, nats_errors.ConnectionDrainingError) as exc:
            raise BusError(f"cannot subscribe to {pattern!r}: the NATS connection is closed ({type(exc).__name__})") from None
        except nats_errors.TimeoutError:
            pass  # the subscription stands; nats-py re-sends it after a reconnect
        try:
            self._conn.check_violations(pattern)
        except AccessDenied:
            await sub.unsubscribe()
            raise
        return sub

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> Msg:
        """Publish with a fresh inbox reply subject and return the first answer.

        Raises NoResponders if nothing matched `subject`, RequestTimeout after
        `timeout` seconds without an answer, AccessDenied if the server
        refused the subject, BusError if the bus closes first.
        """
        await checkpoint_if_cancelled()
        validate_timeout(timeout)
        self._check_open()
        validate_subject(subject)
        payload = validate_data(data)
        hdrs = validate_headers(headers)
        with anyio.CancelScope() as scope:
            self._requests.add(scope)
            try:
                m = await self._conn.request(subject, payload, timeout=timeout, headers=hdrs)
            finally:
                self._requests.discard(scope)
            reply_headers = {str(k): v for k, v in m.headers.items()} if m.headers else None
            return Msg(m.subject, m.data, None, reply_headers)
        raise BusError(f"the bus was closed while a request on {subject!r} waited for its reply")

    async def respond(self, msg: Msg, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        """Publish `data` to ``msg.reply``; UsageError if `msg` expects no reply."""
        if msg.reply is None:
            raise UsageError(
                f"cannot respond to a message on {msg.subject!r}: it has no reply subject "
                f"(it was published, not sent with request())"
            )
        await self.publish(msg.reply, data, headers=headers)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far; raise AccessDenied for refused publishes."""
        self._check_open()
        try:
            await self._conn.barrier(timeout)
        except nats_errors.TimeoutError:
            raise BusError(f"NATS at {self._conn.url} did not answer a flush within {timeout} s") from None
        except (nats_errors.ConnectionClosedError, nats_errors.ConnectionReconnectingError) as exc:
            raise BusError(f"cannot flush: the NATS connection is down ({type(exc).__name__})") from None
        self._conn.check_violations()

    async def aclose(self) -> None:
        """End every subscription and fail pending requests with BusError.  Idempotent."""
        if not self._closed:
            self._closed = True
            for scope in list(self._requests):
                scope.cancel()
            subs, self._subs = list(self._subs), set()
            for sub in subs:
                sub._close()
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    if sub._nsub is not None and not self._conn.closed:
                        try:
                            await sub._nsub.unsubscribe()
                        except (nats_errors.Error, OSError):
                            pass  # the server forgets it with the connection
                    sub._nsub = None
                if self._owns:
                    await self._conn.aclose()
        await cancel_shielded_checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed; open a new one to keep sending messages")
        if self._conn.closed:
            raise BusError(f"the NATS connection to {self._conn.url} is closed; connect again")
