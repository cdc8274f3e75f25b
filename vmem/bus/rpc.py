"""The client side of the actors' protocol: send a typed request, get its typed reply or its error."""

from __future__ import annotations

from typing import Any, TypeVar

from vmem import errors
from vmem.bus.bus import Bus
from vmem.schemas.codec import decode, encode
from vmem.schemas.messages import ErrorReply, Reply

R = TypeVar("R")


async def call(bus: Bus, subject: str, request: Any, reply_type: type[R], *, timeout: float = 30.0) -> R:
    """Send `request` to `subject` (an actor's route) and return its reply, or raise the error it answered."""
    where = ".".join(subject.split(".")[-2:])
    msg = await bus.request(subject, encode(request), timeout=timeout)
    reply = decode(msg.data, Reply, where=f"reply from {where}")
    if isinstance(reply, ErrorReply):
        raise errors.from_reply(reply.code, reply.message, where)
    if not isinstance(reply, reply_type):
        raise errors.SchemaError(f"{where} answered {type(reply).__name__}, expected {reply_type.__name__}")
    return reply
