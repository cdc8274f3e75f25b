"""A real HTTP server on 127.0.0.1 for fake providers: scripted replies first, then the fake's own answers.

A fake provider subclasses :class:`FakeProvider` and says in :meth:`answer`
what the real API would reply, rejecting (400) what it would reject, so the
adapters' wire format is checked by a server rather than by mocks.  Tests
put :class:`Reply` objects in ``script`` to fail or delay the next requests,
and read what was sent in ``seen``.  :func:`running` serves one for a test
and fails it if a handler raised.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any  # the decoded JSON, or None if it was not JSON


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: the fake provider's own answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (cut short at teardown)
    edit: Callable[[Any], Any] | None = None  # applied to the fake's own answer (e.g. to reorder it)


class Sleeps(list[float]):
    """An injected sleep that records instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def bearer_json_post_problems(seen: Seen, path: str, key: str | None) -> list[str]:
    """What an OpenAI-style API objects to in any request: the method and path, the content type, the bearer key."""
    problems: list[str] = []
    if seen.method != "POST" or seen.path != path:
        problems.append(f"unexpected {seen.method} {seen.path}")
    if seen.headers.get("content-type") != "application/json":
        problems.append(f"content-type is {seen.headers.get('content-type')!r}")
    if seen.headers.get("authorization") != (f"Bearer {key}" if key else None):
        problems.append(f"authorization is {seen.headers.get('authorization')!r}")
    return problems


def provider_error(kind: str, message: str) -> bytes:
    """An error in the shape OpenAI and Anthropic both use, ``{"error": {"type", "message"}}``."""
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


class FakeProvider:
    """A threaded HTTP server: scripted replies first, then :meth:`answer`'s."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Reply] = deque()
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                seen = Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with owner._lock:
                    owner.seen.append(seen)
                    reply = owner.script.popleft() if owner.script else Reply()
                if reply.delay and owner.stop.wait(reply.delay):
                    return
                status, payload = reply.status, reply.body
                if payload is None:
                    with owner._lock:  # a fake may keep state (a prompt cache)
                        status, obj = owner.answer(seen)
                    if reply.edit is not None:
                        obj = reply.edit(obj)
                    payload = json.dumps(obj).encode()
                try:
                    # send_response_only: no automatic Date header, so a script can set its own.
                    self.send_response_only(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in {**owner.headers(seen), **reply.headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                exc = sys.exc_info()[1]
                if exc is not None and not isinstance(exc, OSError):
                    owner.failures.append(exc)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, seen: Seen) -> tuple[int, Any]:
        """The status and JSON body the real API would send for `seen`."""
        raise NotImplementedError

    def headers(self, seen: Seen) -> dict[str, str]:
        """Headers the real API adds to every reply."""
        return {}

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.server.server_close()  # joins the handler threads


F = TypeVar("F", bound=FakeProvider)


@contextmanager
def running(fake: F) -> Iterator[F]:
    """Serve `fake` until the block ends; then fail if any request crashed its handler."""
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield fake
    finally:
        fake.close()
        thread.join()
    assert fake.failures == []
