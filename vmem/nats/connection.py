"""The NATS connection a process shares: vmem's error mapping, permission refusals, no buffering while down.

:class:`NatsConnection` is one nats-py connection for a process: the bus, the
JetStream log and the JetStream job queue all use it, so their messages keep
the order the server saw them in.  It reconnects on its own (subscriptions
are restored by nats-py), reports the server's permission violations as
:class:`~vmem.errors.AccessDenied`, and does not buffer publishes while it is
disconnected: a message either goes out on a live connection or the call
fails, which is what lets the log reason about retries.  asyncio only.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import sniffio
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg as NatsMsg

from vmem.errors import AccessDenied, BusError, NoResponders, RequestTimeout, UsageError

__all__ = ["NatsConnection", "redact_url", "require_asyncio"]

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
