"""One JetStream admin client: API requests with vmem's errors, retried through outages, and stream set-up.

The log and the job queue both use it to look up, create and list streams
and consumers; an answer with code 503 (JetStream unavailable: a restart, a
leader election) and a dropped connection are *transient* and retried for up
to `retry_for` seconds; any other JetStream error is an :class:`ApiError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from vmem.errors import AccessDenied, BusError, LogError
from vmem.nats.connection import NatsConnection

T = TypeVar("T")

STREAM_NOT_FOUND = 10059
STREAM_EXISTS = 10058
CONSUMER_NOT_FOUND = 10014
CONSUMER_EXISTS = 10148
WRONG_LAST_SEQUENCE = 10071


class Transient(Exception):
    """A failure worth retrying: NATS or JetStream is (briefly) unavailable."""


class ApiError(Exception):
    """JetStream answered with an error (other than unavailable)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


def parse_json(data: bytes) -> dict[str, Any]:
    """A JetStream answer as a dict; LogError if it is not one."""
    try:
        out = json.loads(data)
    except ValueError:
        raise LogError(f"JetStream sent an answer that is not JSON: {data[:200]!r}") from None
    if not isinstance(out, dict):
        raise LogError(f"JetStream sent an unexpected answer: {data[:200]!r}")
    return out


def api_error_of(reply: dict[str, Any]) -> ApiError | None:
    """The error a JetStream answer carries, if any; Transient if JetStream is unavailable."""
    err = reply.get("error")
    if err is None:
        return None
    error = ApiError(int(err.get("code", 0)), int(err.get("err_code", 0)), str(err.get("description", "")))
    if error.code == 503:
        raise Transient(str(error))
    return error


class JetStreamAdmin:
    """JetStream API calls on a shared connection (see the module docstring)."""

    def __init__(self, conn: NatsConnection, *, api_prefix: str = "$JS.API", timeout: float = 5.0,
                 retry_for: float = 60.0) -> None:
        self.conn = conn
        self.api = api_prefix
        self.timeout = timeout
        self.retry_for = retry_for
        self.retries = 0
        """Operations retried because NATS or JetStream was unavailable (restarts, elections)."""

    async def retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, retrying while NATS or JetStream is unavailable, for up to `retry_for` seconds."""
        deadline = anyio.current_time() + self.retry_for
        delay = 0.02
        while True:
            try:
                return await op()
            except Transient as exc:
                self.retries += 1
                if anyio.current_time() + delay > deadline:
                    raise LogError(
                        f"{what}: NATS JetStream at {self.conn.url} was unavailable for {self.retry_for:g} s ({exc}); "
                        f"an append may or may not have committed: retry it with the same idempotency key"
                    ) from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def request(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API request (``$JS.API.<subject>``); Transient when unavailable, ApiError for JetStream's refusals."""
        try:
            msg = await self.conn.request(f"{self.api}.{subject}", json.dumps(body).encode() if body else b"",
                                          timeout=self.timeout)
        except BusError as exc:
            raise Transient(str(exc)) from None
        reply = parse_json(msg.data)
        error = api_error_of(reply)
        if error is not None:
            raise error
        return reply

    async def stream_info(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """``STREAM.INFO``, or None if there is no such stream."""
        try:
            return await self.request(f"STREAM.INFO.{name}", body)
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return None
            raise LogError(f"cannot look up stream {name}: {exc}") from None

    async def ensure_stream(self, config: dict[str, Any], *, refused: str = "") -> dict[str, Any]:
        """The configuration of the stream `config` names, creating it with `config` if it does not exist.

        `refused` is the message of the AccessDenied raised when these
        credentials may not create it.
        """
        name = config["name"]
        info = await self.stream_info(name)
        if info is not None:
            return dict(info.get("config") or {})
        try:
            info = await self.request(f"STREAM.CREATE.{name}", config)
        except AccessDenied:
            raise AccessDenied(refused or f"these credentials may not create the stream {name}") from None
        except ApiError as exc:
            info = await self.stream_info(name)  # created meanwhile by another process
            if info is None:
                raise LogError(f"cannot create stream {name}: {exc}") from None
        return dict(info.get("config") or {})

    async def stream_names(self, subject: str) -> list[str]:
        """Every stream whose subjects overlap `subject`."""
        names: list[str] = []
        while True:
            reply = await self.request("STREAM.NAMES", {"subject": subject, "offset": len(names)})
            page = reply.get("streams") or []
            names += page
            if not page or len(names) >= int(reply.get("total", 0)):
                return names

    async def stream_subjects(self, name: str, subjects_filter: str) -> list[str]:
        """The subjects of stream `name` matching `subjects_filter` that hold messages ([] if no stream)."""
        found: list[str] = []
        while True:
            info = await self.stream_info(name, {"subjects_filter": subjects_filter, "offset": len(found)})
            if info is None:
                return []
            page = list((info.get("state") or {}).get("subjects") or {})
            found += page
            if not page or len(found) >= int(info.get("total", 0)):
                return found

    async def ensure_consumer(self, stream: str, config: dict[str, Any]) -> None:
        """Create the durable consumer `config` names on `stream` if it does not exist."""
        name = config["durable_name"]
        try:
            await self.request(f"CONSUMER.INFO.{stream}.{name}")
            return
        except ApiError as exc:
            if exc.err_code != CONSUMER_NOT_FOUND:
                raise LogError(f"cannot look up the consumer {name} of {stream}: {exc}") from None
        try:
            await self.request(f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
        except ApiError as exc:
            if exc.err_code != CONSUMER_EXISTS:  # created meanwhile by another process
                raise LogError(f"cannot create the consumer {name} of {stream}: {exc}") from None
