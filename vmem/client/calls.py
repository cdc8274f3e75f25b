"""The one thing every client call does: a typed request to an actor's subject, and its typed reply."""

from __future__ import annotations

from typing import Any, TypeVar

from vmem.bus.bus import Bus
from vmem.bus.rpc import call
from vmem.bus.subjects import Subjects
from vmem.state.namespace import validate_namespace

R = TypeVar("R")
LONG_TIMEOUT = 3600.0  # ingest (indexing) and replay of a large namespace


class ActorCalls:
    """A bus, a default timeout and the deployment's subjects: what the client's method groups share."""

    def __init__(self, bus: Bus, *, timeout: float = 30.0, subjects: Subjects | None = None) -> None:
        self.bus = bus
        self.timeout = timeout
        self.subjects = subjects or Subjects()

    async def _call(self, ns: str, actor: str, verb: str, request: Any, reply_type: type[R], *, timeout: float | None = None) -> R:
        validate_namespace(ns)
        return await call(self.bus, self.subjects.request(ns, actor, verb), request, reply_type, timeout=timeout or self.timeout)
