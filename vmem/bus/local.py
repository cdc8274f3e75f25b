"""An in-process :class:`~vmem.bus.bus.Bus` with NATS core semantics, on anyio.

:class:`LocalBus` runs under asyncio and trio alike, starts no tasks of its
own and does all routing synchronously inside :meth:`LocalBus.publish`, so
delivery order is deterministic: subscriptions get messages in publish order,
plain subscriptions before queue groups, and each queue group hands its
messages to its matching members round-robin in subscription order.

Slow consumers: publishing never waits for subscribers.  Each subscription
buffers at most ``pending_limit`` messages (65536 unless configured); a
message that would exceed the limit is dropped for that subscription only and
counted in :attr:`LocalSubscription.dropped`, like the NATS client's slow
consumer handling.  A queue group passes a message to the next member with
room before it drops it.

A ``LocalBus`` belongs to one event loop; it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

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
from vmem.errors import BusError, NoResponders, RequestTimeout, UsageError

__all__ = ["DEFAULT_PENDING_LIMIT", "LocalBus", "LocalSubscription"]

class LocalSubscription(BufferedSubscription):
    """A subscription on a :class:`LocalBus`; iterate it to receive messages."""

    def __init__(
        self, bus: LocalBus, sid: int, pattern: str, queue: str | None, pending_limit: int,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> None:
        super().__init__(pattern, queue, pending_limit, pending_bytes)
        self._bus = bus
        self._sid = sid

    async def unsubscribe(self) -> None:
        """Stop delivery and end iteration, discarding buffered messages.  Idempotent."""
        # Done before any checkpoint so that cancellation can never leave the
        # subscription half removed.
        self._bus._remove(self)
        self._close()
        await cancel_shielded_checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pending={len(self._pending)}"
        return f"<LocalSubscription {self._pattern!r} queue={self._queue!r} {state}>"


class _Node:
    """A level of the wildcard-pattern trie; keys are tokens, including '*'."""

    __slots__ = ("children", "here", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        # Patterns ending at this node, and patterns ending in '>' right after
        # it; keyed by sid so removal is O(1).
        self.here: dict[int, LocalSubscription] = {}
        self.rest: dict[int, LocalSubscription] = {}

    def empty(self) -> bool:
        return not (self.children or self.here or self.rest)


class _Index:
    """Subscriptions by pattern: a dict for literal patterns, a trie for wildcards.

    Most subscriptions (and every request inbox) are literal, so matching a
    subject costs one dict lookup plus a walk of the wildcard trie that only
    visits branches the subject's tokens can reach.
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[int, LocalSubscription]] = {}
        self._root = _Node()

    def add(self, sub: LocalSubscription) -> None:
        tokens = sub.pattern.split(".")
        if "*" not in tokens and ">" not in tokens:
            self._exact.setdefault(sub.pattern, {})[sub._sid] = sub
            return
        node = self._root
        for token in tokens[:-1]:
            node = node.children.setdefault(token, _Node())
        if tokens[-1] == ">":
            node.rest[sub._sid] = sub
        else:
            node.children.setdefault(tokens[-1], _Node()).here[sub._sid] = sub

    def remove(self, sub: LocalSubscription) -> None:
        tokens = sub.pattern.split(".")
        if "*" not in tokens and ">" not in tokens:
            subs = self._exact.get(sub.pattern)
            if subs is not None and subs.pop(sub._sid, None) is not None and not subs:
                del self._exact[sub.pattern]
            return
        path = [self._root]
        walk = tokens[:-1] if tokens[-1] == ">" else tokens
        for token in walk:
            child = path[-1].children.get(token)
            if child is None:
                return
            path.append(child)
        (path[-1].rest if tokens[-1] == ">" else path[-1].here).pop(sub._sid, None)
        # Prune emptied branches so short-lived wildcard subscriptions do not
        # leave the trie growing forever.
        for depth in range(len(walk), 0, -1):
            if not path[depth].empty():
                break
            del path[depth - 1].children[walk[depth - 1]]

    def match(self, subject: str) -> list[LocalSubscription]:
        tokens = subject.split(".")
        found = list(self._exact.get(subject, {}).values())
        if self._root.children or self._root.rest:
            self._walk(self._root, tokens, 0, found)
        return found

    def _walk(
        self, node: _Node, tokens: list[str], i: int, found: list[LocalSubscription]
    ) -> None:
        if i == len(tokens):
            found.extend(node.here.values())
            return
        found.extend(node.rest.values())
        for key in (tokens[i], "*"):
            child = node.children.get(key)
            if child is not None:
                self._walk(child, tokens, i + 1, found)

    def all(self) -> list[LocalSubscription]:
        found = [sub for subs in self._exact.values() for sub in subs.values()]
        stack = [self._root]
        while stack:
            node = stack.pop()
            found.extend(node.here.values())
            found.extend(node.rest.values())
            stack.extend(node.children.values())
        return found


class LocalBus(BusContext):
    """An in-process bus with NATS core semantics; see the module docstring.

    Use as ``async with LocalBus() as bus:``.  It holds no tasks, so closing
    it only ends subscriptions and fails pending requests.
    """

    def __init__(self, *, pending_limit: int = DEFAULT_PENDING_LIMIT) -> None:
        self._default_limit = check_limit(pending_limit)
        self._index = _Index()
        self._next_sid = 0
        self._next_inbox = 0
        # Round-robin cursor and live member count per queue group name.
        self._cursor: dict[str, int] = {}
        self._members: dict[str, int] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Deliver `data` to every matching subscription; never waits for subscribers."""
        await checkpoint_if_cancelled()
        msg = self._message(subject, data, reply, headers)
        self._route(msg)
        # Yield after routing so a publishing loop lets subscribers keep up
        # instead of overflowing their pending limits; shielded because the
        # message is already sent.
        await cancel_shielded_checkpoint()

    async def subscribe(
        self, pattern: str, *, queue: str | None = None, pending_limit: int | None = None,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
    ) -> LocalSubscription:
        """Subscribe to `pattern`, optionally in queue group `queue`.

        `pending_limit` overrides the bus's per-subscription buffer limit (messages);
        `pending_bytes` bounds the payload bytes it buffers.
        """
        await checkpoint_if_cancelled()
        validate_pattern(pattern)
        validate_queue(queue)
        limit = self._default_limit if pending_limit is None else check_limit(pending_limit)
        sub = self._add(pattern, queue, limit, check_limit(pending_bytes, "pending_bytes"))
        await cancel_shielded_checkpoint()
        return sub

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> Msg:
        """Publish with a fresh ``_INBOX.<n>`` reply subject and return the first answer.

        Raises NoResponders if nothing matched `subject`, RequestTimeout after
        `timeout` seconds without an answer, BusError if the bus closes first.
        """
        await checkpoint_if_cancelled()
        validate_timeout(timeout)
        self._check_open()
        inbox = f"_INBOX.{self._next_inbox}"
        self._next_inbox += 1
        # Later answers (several responders, no queue group) are dropped, as
        # only the first one is ever read.
        sub = self._add(inbox, None, 1)
        try:
            msg = self._message(subject, data, inbox, headers)
            if not self._route(msg):
                raise NoResponders(
                    f"no subscriber for request on {subject!r}: start the actor that serves "
                    f"it, or check the subject"
                )
            with anyio.move_on_after(timeout):
                try:
                    return await sub.__anext__()
                except StopAsyncIteration:
                    raise BusError(
                        f"the bus was closed while a request on {subject!r} waited for its reply"
                    ) from None
            raise RequestTimeout(
                f"no reply to request on {subject!r} within {timeout} s: the responder is "
                f"busy, stuck or ignoring the message; retry or raise the timeout"
            )
        finally:
            self._remove(sub)
            sub._close()

    async def respond(
        self, msg: Msg, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish `data` to ``msg.reply``; UsageError if `msg` expects no reply."""
        if msg.reply is None:
            raise UsageError(
                f"cannot respond to a message on {msg.subject!r}: it has no reply subject "
                f"(it was published, not sent with request())"
            )
        await self.publish(msg.reply, data, headers=headers)

    async def aclose(self) -> None:
        """End every subscription and fail pending requests with BusError.  Idempotent."""
        if not self._closed:
            self._closed = True
            for sub in self._index.all():
                sub._close()
            self._index = _Index()
            self._cursor.clear()
            self._members.clear()
        await cancel_shielded_checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed; open a new one to keep sending messages")

    def _message(
        self, subject: str, data: bytes, reply: str | None, headers: Mapping[str, str] | None
    ) -> Msg:
        self._check_open()
        validate_subject(subject)
        if reply is not None:
            validate_subject(reply)
        return Msg(subject, validate_data(data), reply, validate_headers(headers))

    def _add(self, pattern: str, queue: str | None, limit: int, byte_limit: int = DEFAULT_PENDING_BYTES) -> LocalSubscription:
        self._check_open()
        sub = LocalSubscription(self, self._next_sid, pattern, queue, limit, byte_limit)
        self._next_sid += 1
        self._index.add(sub)
        if queue is not None:
            self._members[queue] = self._members.get(queue, 0) + 1
            self._cursor.setdefault(queue, 0)
        return sub

    def _remove(self, sub: LocalSubscription) -> None:
        if sub._closed or self._closed:
            return
        self._index.remove(sub)
        if sub.queue is not None:
            left = self._members[sub.queue] - 1
            if left:
                self._members[sub.queue] = left
            else:
                del self._members[sub.queue], self._cursor[sub.queue]

    def _route(self, msg: Msg) -> int:
        """Hand `msg` to its subscribers; return how many subscriptions matched."""
        matches = self._index.match(msg.subject)
        if len(matches) > 1:
            matches.sort(key=lambda s: s._sid)
        groups: dict[str, list[LocalSubscription]] = {}
        for sub in matches:
            if sub.queue is None:
                if not sub._offer(msg):
                    sub._dropped += 1
            else:
                groups.setdefault(sub.queue, []).append(sub)
        for queue, members in groups.items():
            start = self._cursor[queue] % len(members)
            self._cursor[queue] = start + 1
            for k in range(len(members)):
                if members[(start + k) % len(members)]._offer(msg):
                    break
            else:
                members[start]._dropped += 1
        return len(matches)
