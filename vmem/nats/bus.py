"""The :class:`~vmem.bus.bus.Bus` over NATS (nats-py), and the connection it shares.

:class:`NatsConnection` is one nats-py connection for a process: the bus, the
JetStream log and the JetStream job queue all use it, so their messages keep
the order the server saw them in.  It reconnects on its own (subscriptions
are restored by nats-py), reports the server's permission violations as
:class:`~vmem.errors.AccessDenied`, and does not buffer publishes while it is
disconnected: a message either goes out on a live connection or the call
fails, which is what lets the log reason about retries.

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

import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import sniffio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg as NatsMsg

from vmem.bus.bus import (
    Msg,
    validate_data,
    validate_headers,
    validate_pattern,
    validate_queue,
    validate_subject,
)
from vmem.bus.subscription import (
    DEFAULT_PENDING_BYTES,
    DEFAULT_PENDING_LIMIT,
    BufferedSubscription,
    check_limit,
)
from vmem.errors import AccessDenied, BusError, NoResponders, RequestTimeout, UsageError

__all__ = [
    "DEFAULT_PENDING_LIMIT",
    "NatsBus",
    "NatsConnection",
    "NatsSubscription",
    "redact_url",
    "require_asyncio",
]


DEFAULT_RECONNECT_WAIT = 0.25
DEFAULT_CONNECT_TIMEOUT = 10.0

# nats-py lower-cases the server's -ERR text before reporting it.
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')


def require_asyncio(what: str) -> None:
    """Raise UsageError unless running under asyncio (nats-py supports nothing else)."""
    try:
        lib = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        lib = "no async library"
    if lib != "asyncio":
        raise UsageError(
            f"{what} needs asyncio: nats-py, the NATS client, runs only on asyncio (this is {lib}); "
            f"run it with anyio.run(..., backend='asyncio') or use the embedded runtime on trio"
        )


def redact_url(url: str) -> str:
    """`url` without its password, for messages and logs.

    Split by hand, not with urllib: a password may hold '/', '#', '?' or '@',
    which would end the authority early for a URL parser and leave the secret
    in what is shown.  The user information is whatever lies between the
    scheme and the last '@' before the host.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at < 0:
        return url
    userinfo, host = rest[:at], rest[at + 1 :]
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:***" if colon else user
    return f"{scheme}{sep}{shown}@{host}"


class _Violations:
    """Permission violations reported by the server, and who is waiting to hear of one."""

    def __init__(self) -> None:
        self.unclaimed: deque[tuple[str, str]] = deque(maxlen=256)
        self.watchers: dict[str, list[Callable[[str], None]]] = {}

    def report(self, kind: str, subject: str) -> None:
        hits = self.watchers.get(subject, [])
        for notify in list(hits):
            notify(kind)
        if not hits:
            self.unclaimed.append((kind, subject))

    def watch(self, subject: str, notify: Callable[[str], None]) -> Callable[[], None]:
        key = subject.lower()
        self.watchers.setdefault(key, []).append(notify)

        def unwatch() -> None:
            hits = self.watchers.get(key)
            if hits is not None:
                hits.remove(notify)
                if not hits:
                    del self.watchers[key]

        return unwatch

    def take(self, subject: str | None = None) -> list[tuple[str, str]]:
        """Forget and return unclaimed violations (of `subject` only, if given)."""
        if subject is None:
            out = list(self.unclaimed)
            self.unclaimed.clear()
            return out
        key = subject.lower()
        out = [v for v in self.unclaimed if v[1] == key]
        for v in out:
            self.unclaimed.remove(v)
        return out


class NatsConnection:
    """A nats-py connection with vmem's error mapping; share one per process.

    Use :meth:`connect`; close with :meth:`aclose` (idempotent).  Components
    built on it register reconnect and slow-consumer listeners with
    :meth:`on_reconnect`.
    """

    def __init__(self, nc: Client, url: str) -> None:
        self.nc = nc
        self.url = redact_url(url)
        self.violations = _Violations()
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._auth_failed: anyio.CancelScope | None = None
        self._auth_error = False
        self.closed = False

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        name: str | None = None,
        inbox_prefix: str = "_INBOX",
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        reconnect_wait: float = DEFAULT_RECONNECT_WAIT,
        max_reconnect_attempts: int = -1,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> "NatsConnection":
        """Connect to `url` (``nats://[user:password@]host:port``; several for a cluster).

        Reconnects forever by default once connected; the first connection
        must succeed within `connect_timeout` seconds.  Tenants connect with
        ``inbox_prefix="_INBOX_<tenant>"`` so the server can confine their
        replies (see ops/nats-server.conf).
        """
        require_asyncio("the NATS connection")
        servers = [url] if isinstance(url, str) else list(url)
        shown = ", ".join(redact_url(u) for u in servers)
        self = cls(Client(), shown)
        options: dict[str, Any] = dict(
            servers=servers,
            name=name,
            error_cb=self._on_error,
            reconnected_cb=self._on_reconnected,
            allow_reconnect=True,
            reconnect_time_wait=reconnect_wait,
            max_reconnect_attempts=max_reconnect_attempts,
            connect_timeout=max(1, math.ceil(min(connect_timeout, 5.0))),
            inbox_prefix=inbox_prefix,
            # No buffering while disconnected: a publish is sent now or fails now.
            pending_size=0,
        )
        if user is not None:
            options.update(user=user, password=password)
        if token is not None:
            options["token"] = token
        if creds is not None:
            options["user_credentials"] = creds
        with anyio.move_on_after(connect_timeout) as deadline:
            with anyio.CancelScope() as self._auth_failed:
                try:
                    await self.nc.connect(**options)
                except nats_errors.Error as exc:
                    await self._close_quietly()
                    raise BusError(f"cannot connect to NATS at {shown}: {exc}") from None
                except OSError as exc:
                    await self._close_quietly()
                    raise BusError(f"cannot connect to NATS at {shown}: {exc}") from None
        self._auth_failed = None
        if self._auth_error:
            await self._close_quietly()
            raise AccessDenied(f"NATS at {shown} refused these credentials (authorization violation); check the user and password")
        if deadline.cancelled_caught:
            await self._close_quietly()
            raise BusError(
                f"cannot connect to NATS at {shown} within {connect_timeout} s: is nats-server running and "
                f"reachable? (start it, or pass the right --nats URL)"
            )
        return self

    async def _close_quietly(self) -> None:
        """Close a client whose first connection failed or was abandoned half-way."""
        with anyio.CancelScope(shield=True):
            try:
                await self.nc.close()
            except (nats_errors.Error, OSError):
                pass
            # An attempt cut short may have left its socket open behind nats-py's
            # back (its own close is skipped once the status says closed).
            transport = getattr(self.nc, "_transport", None)
            if transport is not None:
                try:
                    transport.close()
                    await transport.wait_closed()
                except (nats_errors.Error, OSError):
                    pass
        self.closed = True

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats_errors.AuthorizationError) or "authorization violation" in str(exc).lower():
            if self._auth_failed is not None:
                self._auth_error = True
                self._auth_failed.cancel()
            return
        if isinstance(exc, nats_errors.SlowConsumerError):
            for listener in list(self._reconnect_listeners):
                listener()
            return
        m = _VIOLATION.search(str(exc).lower())
        if m is not None:
            self.violations.report(m.group(1), m.group(2))

    async def _on_reconnected(self) -> None:
        for listener in list(self._reconnect_listeners):
            listener()

    def on_reconnect(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every reconnect and every slow-consumer drop (messages were missed).

        Returns a function that removes the listener.
        """
        self._reconnect_listeners.append(listener)
        return lambda: self._reconnect_listeners.remove(listener) if listener in self._reconnect_listeners else None

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    @property
    def reconnects(self) -> int:
        """How many times this connection has reconnected."""
        return int(self.nc.stats["reconnects"])

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def server_version(self) -> str:
        """The version of the server this connection is on, e.g. ``2.12.1``."""
        return str(self.nc.connected_server_version._server_version)

    async def barrier(self, timeout: float = 5.0) -> None:
        """Return once the server has processed everything this connection sent before the call.

        Two PING/PONG round trips: nats-py writes a PING straight to the
        socket, ahead of commands still waiting in its buffer, so the first
        PONG can come back before the server has seen an earlier SUB or PUB
        (and before its -ERR, if it refused one).  The second PING follows them.
        """
        for _ in range(2):
            await self.nc.flush(timeout=max(1, math.ceil(timeout)))

    def check_violations(self, subject: str | None = None) -> None:
        """Raise AccessDenied for violations reported since the last check (of `subject`, if given)."""
        found = self.violations.take(subject)
        if found:
            what = "; ".join(f"{kind} to {subj!r}" for kind, subj in found)
            raise AccessDenied(
                f"the NATS server refused {what}: these credentials do not allow it "
                f"(a tenant may use only vmem.<tenant>.> and its own stream)"
            )

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> NatsMsg:
        """nats-py request with vmem's errors; AccessDenied as soon as the server refuses it.

        Raises NoResponders, RequestTimeout, AccessDenied, or BusError when
        the connection is closed or down.
        """
        refused: list[str] = []
        with anyio.CancelScope() as scope:

            def notify(kind: str) -> None:
                refused.append(kind)
                scope.cancel()

            unwatch = self.violations.watch(subject, notify)
            try:
                return await self.nc.request(subject, data, timeout=timeout, headers=dict(headers) if headers else None)
            except nats_errors.NoRespondersError:
                raise NoResponders(
                    f"nobody answers {subject!r} for these credentials: a tenant reaches only its own namespaces' "
                    f"subjects, and only while a `vmem serve` hosting them runs"
                ) from None
            except nats_errors.TimeoutError:
                inbox = bytes(self.nc._inbox_prefix).decode().lower()
                if any(kind == "subscription" and subj.startswith(inbox) for kind, subj in self.violations.unclaimed):
                    raise AccessDenied(
                        f"no reply to request on {subject!r}: the server refused this connection's reply inbox "
                        f"({inbox}.>); a tenant connects with inbox_prefix='_INBOX_<tenant>'"
                    ) from None
                raise RequestTimeout(
                    f"no reply to request on {subject!r} within {timeout} s: the responder is busy, stuck or "
                    f"ignoring the message; retry or raise the timeout"
                ) from None
            except (nats_errors.ConnectionClosedError, nats_errors.OutboundBufferLimitError,
                    nats_errors.ConnectionReconnectingError, nats_errors.ConnectionDrainingError) as exc:
                raise BusError(f"NATS connection to {self.url} is not usable ({type(exc).__name__}); retry once it reconnects") from None
            except nats_errors.MaxPayloadError:
                raise UsageError(
                    f"message of {len(data)} bytes on {subject!r} exceeds the server's max_payload ({self.max_payload} bytes)"
                ) from None
            finally:
                unwatch()
        raise AccessDenied(
            f"the NATS server refused {refused[0]} to {subject!r}: these credentials do not allow it "
            f"(a tenant may use only vmem.<tenant>.> and its own stream)"
        )

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            with anyio.CancelScope(shield=True):
                try:
                    await self.nc.close()
                except (nats_errors.Error, OSError):
                    pass  # the connection was already broken; it is closed either way


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


class NatsBus:
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
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not (timeout > 0 and math.isfinite(timeout)):
            raise UsageError(f"request timeout must be a positive number of seconds, got {timeout!r}")
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

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed; open a new one to keep sending messages")
        if self._conn.closed:
            raise BusError(f"the NATS connection to {self._conn.url} is closed; connect again")
