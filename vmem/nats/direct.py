"""Direct gets: reads of a stream without a consumer, one round trip per batch of messages.

Answers arrive on this client's private inbox, one subject per request with
an unguessable token; a message is taken only if it is a status or was
stored by the stream asked, so nobody can answer in JetStream's place.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from typing import Any

import anyio
from nats import errors as nats_errors
from nats.aio.msg import Msg as NatsMsg

from vmem.errors import AccessDenied, LogError
from vmem.nats.admin import Transient
from vmem.nats.connection import NatsConnection


class _Replies:
    """Messages arriving on one request's private inbox, from the stream asked."""

    __slots__ = ("items", "event", "stream")

    def __init__(self, stream: str) -> None:
        self.items: deque[NatsMsg] = deque()
        self.event = anyio.Event()
        self.stream = stream


def status_of(stream: str, msg: NatsMsg) -> str | None:
    """A direct get's status: None (a message), "204" (end of batch) or "404" (none); Transient or LogError otherwise."""
    status = msg.headers.get("Status") if msg.headers else None
    if status is None or status in ("204", "404"):
        return status
    if status == "503":
        raise Transient(f"no responders for direct gets on {stream} (stream missing or JetStream restarting)")
    desc = msg.headers.get("Description", "") if msg.headers else ""
    raise LogError(f"JetStream answered a direct get on {stream} with status {status} {desc}".rstrip())


class DirectGets:
    """Direct gets on a shared connection (see the module docstring)."""

    def __init__(self, conn: NatsConnection, *, api_prefix: str = "$JS.API", timeout: float = 5.0) -> None:
        self._conn = conn
        self._api = api_prefix
        self._timeout = timeout
        self._inbox: str | None = None
        self._sub: Any = None
        self._waiting: dict[str, _Replies] = {}

    async def _ensure_inbox(self) -> str:
        if self._inbox is None:
            inbox = self._conn.nc.new_inbox()
            try:
                self._sub = await self._conn.nc.subscribe(f"{inbox}.*", cb=self._on_reply, pending_msgs_limit=0,
                                                          pending_bytes_limit=0)
            except nats_errors.Error as exc:
                raise Transient(f"cannot subscribe to a reply inbox: {exc}") from None
            self._inbox = inbox
        return self._inbox

    async def _on_reply(self, msg: NatsMsg) -> None:
        waiting = self._waiting.get(msg.subject.rsplit(".", 1)[1])
        if waiting is None:
            return
        headers = msg.headers or {}
        # A stored message says which stream it came from; a status (no message, end of batch) does not.
        if headers.get("Nats-Stream", waiting.stream) != waiting.stream or not ("Nats-Stream" in headers or "Status" in headers):
            return
        waiting.items.append(msg)
        waiting.event.set()

    async def get(self, stream: str, body: dict[str, Any] | None, *, last_subject: str | None = None) -> list[NatsMsg]:
        """All replies to one direct get, the terminating status (if any) last."""
        inbox = await self._ensure_inbox()
        token = uuid.uuid4().hex
        api = f"{self._api}.DIRECT.GET.{stream}" + (f".{last_subject}" if last_subject else "")
        replies = self._waiting[token] = _Replies(stream)
        out: list[NatsMsg] = []
        try:
            with anyio.CancelScope() as scope:
                unwatch = self._conn.violations.watch(api, lambda _kind: scope.cancel())
                try:
                    await self._conn.nc.publish(api, json.dumps(body).encode() if body else b"", reply=f"{inbox}.{token}")
                    while True:
                        with anyio.move_on_after(self._timeout) as wait:
                            while not replies.items:
                                await replies.event.wait()
                                replies.event = anyio.Event()
                        if wait.cancelled_caught:
                            raise Transient(f"no answer from JetStream to a direct get on {stream} within {self._timeout} s")
                        while replies.items:
                            msg = replies.items.popleft()
                            out.append(msg)
                            status = msg.headers.get("Status") if msg.headers else None
                            if status is not None or body is None or "batch" not in body:
                                return out
                except (nats_errors.ConnectionClosedError, nats_errors.OutboundBufferLimitError,
                        nats_errors.ConnectionReconnectingError) as exc:
                    raise Transient(f"NATS connection down ({type(exc).__name__})") from None
                finally:
                    unwatch()
            raise AccessDenied(f"the NATS server refused a read of stream {stream}: these credentials do not allow it")
        finally:
            del self._waiting[token]

    async def aclose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._conn.closed:
            try:
                await sub.unsubscribe()
            except (nats_errors.Error, OSError):
                pass
