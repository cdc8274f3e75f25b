"""One HTTP client with retries for everything vmem sends to a provider: the model adapters and the HTTP embedder.

The retry decisions are a plain generator, :func:`retry_plan`, that yields
what to do next (:class:`Send` the request, or :class:`Sleep` this long) and
receives what happened (a response or an httpx error); it does no I/O.
:class:`JSONPoster` drives it with one lazily created
:class:`httpx.AsyncClient` and an injected ``sleep`` (``anyio.sleep`` by
default, so asyncio and trio both work and tests need not wait).

Policy: HTTP 408 (request timeout), 429 (rate limited) and every 5xx (529 is
Anthropic's "overloaded"), as the providers' own SDKs retry them, and
transport failures (connect errors, timeouts, a dropped connection), are
retried up to ``max_retries`` times.  Retry ``k`` (0-based) waits
``min(0.5 * 2**k, 8)`` seconds, or what the response's ``Retry-After`` says
(seconds or an HTTP date; ``retry-after-ms`` too), at most 60 s.  Any other
status fails at once.  Every failure is a :class:`ModelHTTPError`, a
:class:`~vmem.errors.ModelError` naming the provider, the URL, the status and
the start of the body (and the provider's ``error.type``/``error.message``
when the body carries them).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

import httpx
import msgspec

from vmem.errors import ModelError, UsageError

__all__ = [
    "AdapterBase",
    "JSONPoster",
    "ModelHTTPError",
    "backoff_delay",
    "decode_reply",
    "malformed",
    "retry_plan",
    "retryable_status",
]

BASE_DELAY = 0.5
FACTOR = 2.0
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a server asking for longer gets this much, then a retry
_SNIPPET = 200  # characters of a body quoted in an error

# Transport errors that retrying cannot fix: a bad URL scheme, a request
# httpx itself refuses to send.  Every other transport error is retried.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

Sleeper = Callable[[float], Awaitable[object]]
T = TypeVar("T")


class ModelHTTPError(ModelError):
    """A model request failed: `status` is the last HTTP status (None if none came back)."""

    def __init__(self, message: str, *, provider: str, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Send:
    """Send the request (again)."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this many seconds before the next :class:`Send`."""

    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.RequestError


def snippet(response: httpx.Response) -> str:
    """The start of a response body on one line, for an error message."""
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")


class _ErrorDetail(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_error_decoder = msgspec.json.Decoder(_ErrorBody)


def describe_response(response: httpx.Response) -> str:
    """``HTTP 529 (overloaded_error: Overloaded); body: …; request id …``.

    The parenthesis appears when the body is ``{"error": {"type", "message"}}``
    (Anthropic's and OpenAI's error shape; Anthropic adds an outer
    ``"type": "error"``).  The request id, when the provider sends one, is
    what its support will ask for.
    """
    parts = [f"HTTP {response.status_code}"]
    try:
        detail = _error_decoder.decode(response.content).error
    except msgspec.DecodeError:
        detail = None
    if detail is not None and (detail.type or detail.message):
        parts.append(f" ({': '.join(p for p in (detail.type, detail.message) if p)})")
    parts.append(f"; body: {snippet(response)}")
    request_id = response.headers.get("request-id") or response.headers.get("x-request-id")
    if request_id:
        parts.append(f"; request id {request_id}")
    return "".join(parts)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (capped at 60), or None if it does not say."""
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000.0
        except ValueError:
            seconds = math.nan
    else:
        value = response.headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            # An HTTP date: measured against the server's own Date header, so
            # no local clock is read and clock skew does not matter.
            try:
                when = email.utils.parsedate_to_datetime(value)
                now = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None or now.tzinfo is None:
                return None  # not a valid HTTP date (those are always GMT)
            seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retryable_status(status: int) -> bool:
    """Whether a request that got HTTP `status` may succeed if sent again."""
    return status in (408, 429) or status >= 500


def backoff_delay(retry: int, response: httpx.Response | None = None) -> float:
    """The wait before retry number `retry` (0-based): Retry-After if given, else exponential."""
    if response is not None:
        after = retry_after(response)
        if after is not None:
            return after
    return min(BASE_DELAY * FACTOR**retry, MAX_DELAY)


def retry_plan(provider: str, url: str, max_retries: int) -> Generator[Step, Outcome | None, httpx.Response]:
    """Decide sends and sleeps for one request; returns the first 2xx response.

    Raises :class:`ModelHTTPError` for a status that is not retried, or once
    `max_retries` retries have failed too.
    """
    attempt = 0
    while True:
        outcome = yield Send()
        attempt += 1
        response: httpx.Response | None = None
        if isinstance(outcome, httpx.Response):
            response = outcome
            if response.is_success:
                return response
            failure, status = describe_response(response), response.status_code
            retryable = retryable_status(status)
        elif isinstance(outcome, httpx.RequestError):
            failure, status = f"{type(outcome).__name__}: {outcome or 'no detail'}", None
            retryable = isinstance(outcome, httpx.TransportError) and not isinstance(outcome, _PERMANENT)
        else:
            raise AssertionError("a Send step must be answered with a response or an httpx error")
        if not retryable:
            raise ModelHTTPError(
                f"{provider} request to {url} failed: {failure}", provider=provider, status=status, attempts=attempt
            )
        if attempt > max_retries:
            raise ModelHTTPError(
                f"{provider} request to {url} failed after {attempt} attempts; last: {failure}",
                provider=provider,
                status=status,
                attempts=attempt,
            )
        yield Sleep(backoff_delay(attempt - 1, response))


class JSONPoster:
    """POSTs JSON bodies to one URL with retries; owns one lazily created AsyncClient.

    The client is made on the first :meth:`post` (inside the running event
    loop, whichever it is) and closed by :meth:`aclose`; a later post makes a
    new one.  `transport` is handed to the client (e.g. a Unix-socket
    transport, or a proxy's).
    """

    def __init__(
        self,
        *,
        provider: str,
        url: str,
        headers: Mapping[str, str],
        timeout: float,
        max_retries: int,
        sleep: Sleeper,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{provider} base_url must be an http(s) URL, got {url!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise UsageError(f"{provider} timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise UsageError(f"{provider} max_retries must be an integer >= 0, got {max_retries!r}")
        self.provider = provider
        self.url = url
        self._headers = dict(headers)
        self._timeout = httpx.Timeout(timeout)
        self._max_retries = max_retries
        self._sleep = sleep
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._client

    async def post(self, body: bytes) -> httpx.Response:
        """Send `body`; the first 2xx response, or :class:`ModelHTTPError`."""
        client = self._get_client()
        plan = retry_plan(self.provider, self.url, self._max_retries)
        step = next(plan)
        while True:
            outcome: Outcome | None = None
            if isinstance(step, Sleep):
                await self._sleep(step.seconds)
            else:
                try:
                    outcome = await client.post(self.url, content=body, headers=self._headers)
                except httpx.RequestError as exc:
                    outcome = exc
            try:
                step = plan.send(outcome)
            except StopIteration as done:
                return done.value

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class AdapterBase:
    """``aclose()`` and ``async with`` for an adapter holding a :class:`JSONPoster` as ``_http``."""

    _http: JSONPoster

    async def aclose(self) -> None:
        """Close the HTTP client (if one was made); the adapter may still be used after."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def decode_reply(decoder: msgspec.json.Decoder[T], response: httpx.Response, provider: str, url: str) -> T:
    """A 2xx body decoded by `decoder`; ModelError saying what is wrong or missing otherwise."""
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise malformed(provider, url, response, str(exc)) from None


def malformed(provider: str, url: str, response: httpx.Response, detail: str) -> ModelError:
    return ModelError(
        f"malformed {provider} response from {url} (HTTP {response.status_code}): {detail}; "
        f"body starts: {snippet(response)}"
    )
