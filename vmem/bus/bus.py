"""The message bus interface that vmem's actors talk over.

The semantics are those of NATS core, so an in-process bus
(:class:`vmem.bus.local.LocalBus`) and a NATS-backed bus are
interchangeable and pass the same conformance suite:

* Subjects are tokens separated by ``.``.  A subscription pattern may use
  ``*`` (exactly one token) and, as its last token only, ``>`` (one or more
  tokens).  Publish subjects are literal.
* Every plain subscription whose pattern matches gets a copy of a message;
  each queue group gets one copy, handed to one of its matching members.
* Delivery is at most once and publishing never blocks: a subscriber that
  falls too far behind loses messages (a NATS "slow consumer").
* Request/reply publishes with a unique reply subject and waits for the
  first answer.  :class:`~vmem.errors.NoResponders` means nobody was
  subscribed to the subject; :class:`~vmem.errors.RequestTimeout` means
  nobody answered in time.

Validation is deliberately a little stricter than the NATS wire protocol
(``*`` and ``>`` may not appear inside a token, header values may not carry
surrounding whitespace) so that whatever one implementation accepts, every
implementation delivers unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, Self

import msgspec

from vmem.errors import UsageError

__all__ = [
    "Bus",
    "Msg",
    "Subscription",
    "answerable",
    "subject_matches",
    "validate_data",
    "validate_headers",
    "validate_pattern",
    "validate_queue",
    "validate_subject",
]

# NATS forbids whitespace anywhere in a subject; CR/LF in particular would let a
# caller inject protocol commands on a real connection.
_WHITESPACE = re.compile(r"\s")
# RFC 7230 token characters: the header names the NATS wire format accepts.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Msg(msgspec.Struct, frozen=True):
    """One message as delivered to a subscriber.

    ``subject`` is the literal subject it was published to (never the
    subscriber's pattern); ``reply`` is where an answer should go, if anywhere;
    ``headers`` is ``None`` when the publisher sent none.  Treat ``headers`` as
    read-only: every subscriber may share the same dict.
    """

    subject: str
    data: bytes
    reply: str | None = None
    headers: dict[str, str] | None = None


class Subscription(Protocol):
    """Interest in a subject pattern; an async iterator of :class:`Msg`.

    Iteration ends (``StopAsyncIteration``) once the subscription is
    unsubscribed or its bus is closed; messages still buffered at that moment
    are discarded, as in nats-py.  Using it as ``async with`` unsubscribes on
    exit.
    """

    @property
    def pattern(self) -> str:
        """The subject pattern this subscription was made with."""
        ...

    @property
    def queue(self) -> str | None:
        """The queue group this subscription belongs to, if any."""
        ...

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> Msg: ...

    async def unsubscribe(self) -> None:
        """Stop delivery and end iteration.  Idempotent; a no-op once the bus is closed."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BusContext:
    """``async with`` for a bus implementation: entering checks it is open, leaving closes it."""

    def _check_open(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

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


class Bus(Protocol):
    """A publish/subscribe and request/reply bus with NATS core semantics.

    Use as ``async with``; leaving the block closes the bus.  Every operation
    other than :meth:`aclose` raises :class:`~vmem.errors.BusError` once the
    bus is closed, and invalid subjects, patterns, queue names, headers or
    payloads raise :class:`~vmem.errors.UsageError`.
    """

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send `data` to every matching subscription; never waits for subscribers."""
        ...

    async def subscribe(self, pattern: str, *, queue: str | None = None) -> Subscription:
        """Subscribe to `pattern`, optionally as a member of queue group `queue`."""
        ...

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> Msg:
        """Publish with a fresh reply subject and return the first answer.

        Raises :class:`~vmem.errors.NoResponders` if no subscription matched
        `subject` when it was published, :class:`~vmem.errors.RequestTimeout`
        if no answer came within `timeout` seconds, and
        :class:`~vmem.errors.BusError` if the bus closed while waiting.
        """
        ...

    async def respond(
        self, msg: Msg, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish `data` to ``msg.reply``; :class:`~vmem.errors.UsageError` if it has none."""
        ...

    async def aclose(self) -> None:
        """Close the bus: end every subscription and fail pending requests.  Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _tokens(what: str, value: object) -> list[str]:
    """Split a subject or pattern into tokens, rejecting the shapes neither may have."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise UsageError(f"{what} must not be empty")
    if _WHITESPACE.search(value):
        raise UsageError(f"invalid {what} {value!r}: whitespace is not allowed")
    tokens = value.split(".")
    if "" in tokens:
        raise UsageError(
            f"invalid {what} {value!r}: empty token (leading, trailing or doubled '.')"
        )
    return tokens


def validate_subject(subject: str) -> str:
    """Return `subject` if it is a valid literal (publish) subject, else raise UsageError."""
    for token in _tokens("subject", subject):
        if "*" in token or ">" in token:
            raise UsageError(
                f"invalid subject {subject!r}: '*' and '>' are wildcards, allowed only in "
                f"subscription patterns, not in subjects you publish to"
            )
    return subject


def validate_pattern(pattern: str) -> str:
    """Return `pattern` if it is a valid subscription pattern, else raise UsageError.

    ``*`` matches exactly one token and ``>`` one or more tokens; each must be
    a whole token, and ``>`` may only be the last one.
    """
    tokens = _tokens("pattern", pattern)
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if token == ">" and i != last:
            raise UsageError(f"invalid pattern {pattern!r}: '>' is allowed only as the last token")
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise UsageError(
                f"invalid pattern {pattern!r}: a wildcard must be a whole token "
                f"(for example 'a.*.c' or 'a.>', not 'a.b*')"
            )
    return pattern


def validate_queue(queue: str | None) -> str | None:
    """Return `queue` if it is None or a valid queue group name, else raise UsageError."""
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue or _WHITESPACE.search(queue):
        raise UsageError(
            f"invalid queue group {queue!r}: expected a non-empty str without whitespace, "
            f"or None for a plain subscription"
        )
    return queue


def validate_timeout(timeout: float) -> float:
    """`timeout` if it is a positive, finite number of seconds, else UsageError."""
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"request timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


def validate_data(data: bytes) -> bytes:
    """Return the payload as ``bytes``; bytes-like objects are copied, anything else is refused."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        # Copy so a later mutation by the publisher cannot change a delivered message.
        return bytes(data)
    raise UsageError(
        f"message data must be bytes, got {type(data).__name__}; encode text first "
        f"(for example s.encode())"
    )


def validate_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Return a private copy of `headers` (None if empty), or raise UsageError.

    Names must be RFC 7230 tokens; values must be str without CR/LF or
    surrounding whitespace, because the NATS wire format would strip or
    mangle them and the message would not arrive as sent.
    """
    if not headers:
        return None
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not _HEADER_KEY.fullmatch(key):
            raise UsageError(
                f"invalid header name {key!r}: use letters, digits and !#$%&'*+-.^_`|~ only"
            )
        if not isinstance(value, str) or "\r" in value or "\n" in value or value != value.strip():
            raise UsageError(
                f"invalid value {value!r} for header {key!r}: expected a str without "
                f"line breaks or leading/trailing whitespace"
            )
        out[key] = value
    return out


REPLY_PREFIXES = ("_INBOX.", "_INBOX_", "_R_.")
"""Reply subjects a service answers: request inboxes, and the server's cross-account reply subjects."""


def answerable(reply: str | None) -> bool:
    """Whether a service answers on `reply`: only a requester's inbox, never a subject a caller picks."""
    return reply is not None and reply.startswith(REPLY_PREFIXES)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether subscription `pattern` matches literal `subject` (both validated first)."""
    ptoks = validate_pattern(pattern).split(".")
    stoks = validate_subject(subject).split(".")
    for i, ptok in enumerate(ptoks):
        if ptok == ">":
            return len(stoks) > i
        if i >= len(stoks) or (ptok != "*" and ptok != stoks[i]):
            return False
    return len(ptoks) == len(stoks)
