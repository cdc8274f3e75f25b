"""The runtime that hosts actors on a bus, and the client side of their protocol.

An actor declares ``name`` and ``routes()`` (verb -> :class:`Route`).  The
runtime subscribes ``vmem.*.*.<name>.<verb>`` in the queue group ``<name>``
(so any number of runtimes share an actor's work, on NATS as in process) and
answers every request it takes:

* a request bigger than the route allows, that does not decode as the route's
  request type (msgpack or JSON; bounded fields; nesting too deep), or whose
  namespace is not the one of its subject is refused with an ErrorReply;
* an error the handler raises becomes an ErrorReply to that caller; a bug (any
  other exception) too, and it is reported to the operator and recorded as an
  ErrorRaised event of the namespace: one caller's request never ends the
  process that serves others;
* answers go only to request inboxes (``_INBOX…``) and to the server's
  cross-account reply subjects (``_R_.…``), never to a subject a caller picks.

Everything runs in one task group: leaving ``running()`` cancels and joins
every task.  Actors of one runtime call each other through a :class:`Caller`,
which hands a request straight to a handler hosted here and sends it over the
bus otherwise.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import anyio
import msgspec

from vmem import errors
from vmem.bus.bus import Bus, Msg, answerable, subject_matches
from vmem.bus.rpc import call
from vmem.bus.subjects import Subjects, namespace_pattern
from vmem.nats.accounts import request_tenant
from vmem.schemas.codec import decode, encode_as, is_json
from vmem.schemas.messages import ErrorReply

R = TypeVar("R")
Handler = Callable[[Any], Awaitable[Any]]
Report = Callable[[dict[str, Any]], None]

DEFAULT_MAX_REQUEST = 1 * 2**20
"""Bytes a request may have unless its route says otherwise (ingest batches take more)."""

class Route(msgspec.Struct, frozen=True):
    """One verb of an actor: its handler, the request type it takes, and how large a request may be."""

    handler: Handler
    request: type
    max_bytes: int = DEFAULT_MAX_REQUEST
    client: bool = True  # reachable by tenants (exported to their accounts); False: service-internal


class Actor(Protocol):
    """Something the runtime can host: a name, routes, a queue group and how many requests at once."""

    name: str
    queue: str
    concurrency: int

    def routes(self) -> Mapping[str, Route]: ...


class Caller:
    """How actors call each other: straight to a handler this process hosts, else over the bus."""

    def __init__(self, bus: Bus, subjects: Subjects) -> None:
        self.bus = bus
        self.subjects = subjects
        self._local: dict[str, tuple[Route, list[str]]] = {}

    def host(self, actor: str, verb: str, route: Route, namespaces: Sequence[str]) -> None:
        self._local[f"{actor}.{verb}"] = (route, [self.subjects.route(ns, actor, verb) for ns in namespaces])

    def forget(self) -> None:
        self._local.clear()

    async def __call__(self, ns: str, actor: str, verb: str, request: Any, reply_type: type[R], *, timeout: float = 30.0) -> R:
        local = self._local.get(f"{actor}.{verb}")
        if local is not None:
            route, patterns = local
            subj = self.subjects.request(ns, actor, verb)
            if any(subject_matches(p, subj) for p in patterns):
                reply = await route.handler(request)
                if not isinstance(reply, reply_type):
                    raise errors.SchemaError(f"{actor}.{verb} answered {type(reply).__name__}, expected {reply_type.__name__}")
                return reply
        return await call(self.bus, self.subjects.request(ns, actor, verb), request, reply_type, timeout=timeout)


def _stderr_report(info: dict[str, Any]) -> None:
    sys.stderr.write(msgspec.json.encode(info).decode() + "\n")


class ActorRuntime:
    """Hosts actors on a bus inside one task group (structured concurrency).

    `namespaces` limits what this runtime serves: namespaces ``TENANT/AGENT``
    or wildcards ``TENANT/*`` (a whole tenant); the default ``*/*`` serves all.
    `caller` is the :class:`Caller` the actors were given, so calls between
    actors of this runtime skip the bus.  `report` hears of every internal
    error (default: one JSON line on stderr); `record` appends the
    ErrorRaised event for one (the actors' writer).
    """

    def __init__(
        self,
        bus: Bus,
        actors: list[Actor],
        *,
        subjects: Subjects,
        namespaces: Sequence[str] = ("*/*",),
        caller: Caller | None = None,
        report: Report | None = None,
        record: Callable[[str, str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.actors = actors
        self.subjects = subjects
        self.namespaces = sorted(set(namespaces))
        for ns in self.namespaces:
            namespace_pattern(ns)  # refused before anything is subscribed
        self.caller = caller
        self.report = report or _stderr_report
        self.record = record
        self.answered = 0
        self.refused = 0  # requests with a reply subject the actors do not answer
        self.failures = 0  # internal errors (bugs), each answered and reported

    @asynccontextmanager
    async def running(self) -> AsyncIterator["ActorRuntime"]:
        """Serve every actor until the block exits; then cancel and join them all."""
        async with anyio.create_task_group() as tg:
            for actor in self.actors:
                for verb, route in sorted(actor.routes().items()):
                    if self.caller is not None:
                        self.caller.host(actor.name, verb, route, self.namespaces)
                    for ns in self.namespaces:
                        sub = await self.bus.subscribe(self.subjects.route(ns, actor.name, verb), queue=actor.queue)
                        for _ in range(max(1, actor.concurrency)):
                            tg.start_soon(self._serve, sub, route, f"{actor.name}.{verb}")
            try:
                yield self
            finally:
                if self.caller is not None:
                    self.caller.forget()
                tg.cancel_scope.cancel()

    async def _serve(self, sub: Any, route: Route, where: str) -> None:
        async for msg in sub:
            await self._handle(msg, route, where)

    async def _handle(self, msg: Msg, route: Route, where: str) -> None:
        if not answerable(msg.reply):
            # A reply subject elsewhere would have this actor publish, with the
            # service's rights, wherever a caller chose.
            self.refused += 1
            return
        json = is_json(msg.data)
        ns = self.subjects.namespace_of(msg.subject)
        try:
            reply = await self._reply(msg, route, where, ns)
        except errors.VmemError as exc:
            reply = ErrorReply(code=type(exc).__name__, message=exc.message)
        except Exception as exc:  # a bug: answered, reported and recorded, never fatal to the process
            reply = await self._internal(exc, where, ns)
        await self._respond(msg, reply, json, where)

    async def _reply(self, msg: Msg, route: Route, where: str, ns: str) -> Any:
        if len(msg.data) > route.max_bytes:
            raise errors.UsageError(
                f"{where}: a request of {len(msg.data)} bytes is over this route's limit of {route.max_bytes}; "
                f"send smaller requests"
            )
        stamped = request_tenant(msg.headers)
        if stamped is not None and stamped != ns.split("/")[0]:
            # The server says which tenant's account sent it: never act for another.
            raise errors.AccessDenied(f"{where}: a request from tenant {stamped!r} on {msg.subject}; a tenant reaches its own subjects only")
        request = decode(msg.data, route.request, where=where)
        if getattr(request, "ns", ns) != ns:
            raise errors.UsageError(
                f"{where}: message for namespace {request.ns!r} sent on {msg.subject}; no actor reads across namespaces"
            )
        return await route.handler(request)

    async def _internal(self, exc: Exception, where: str, ns: str) -> ErrorReply:
        self.failures += 1
        self.report({"event": "internal_error", "where": where, "ns": ns, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exception(exc)[-3:]})
        if self.record is not None:
            try:
                await self.record(ns, where, f"{type(exc).__name__}: {exc}"[:500])
            except Exception as again:  # the namespace itself may be what is broken
                self.report({"event": "record_failed", "where": where, "ns": ns, "error": repr(again)})
        return ErrorReply(code="internal", message=f"{where}: internal error ({type(exc).__name__}); it was reported to the operator")

    async def _respond(self, msg: Msg, reply: Any, json: bool, where: str) -> None:
        try:
            await self.bus.respond(msg, encode_as(reply, json=json))
        except errors.UsageError as exc:  # too large for the bus: say so instead
            try:
                too_big = ErrorReply(code="UsageError", message=f"{where}: the reply could not be sent ({exc.message}); "
                                                                 f"ask for less (a smaller budget or limit)")
                await self.bus.respond(msg, encode_as(too_big, json=json))
            except errors.VmemError as again:
                self.report({"event": "reply_failed", "where": where, "error": again.message})
        except errors.BusError as exc:  # the connection went away while replying: the caller retries
            self.report({"event": "reply_failed", "where": where, "error": exc.message})
        except Exception as exc:  # a reply that cannot be encoded: a bug, reported, never fatal
            self.failures += 1
            self.report({"event": "reply_failed", "where": where, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self.answered += 1
