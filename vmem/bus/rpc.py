"""The client side of the actors' protocol: send a typed request, get its typed reply or its error."""

from __future__ import annotations

from typing import Any, TypeVar

from vmem import errors
from vmem.bus.bus import Bus
from vmem.schemas.codec import decode, encode
from vmem.schemas.messages import ErrorReply, Reply
from vmem.state.namespace import subject

R = TypeVar("R")


async def call(bus: Bus, ns: str, actor: str, verb: str, request: Any, reply_type: type[R], *, timeout: float = 30.0) -> R:
    """Send `request` to ``vmem.<tenant>.<agent>.<actor>.<verb>`` and return its reply, or raise the error it answered."""
    msg = await bus.request(subject(ns, actor, verb), encode(request), timeout=timeout)
    reply = decode(msg.data, Reply, where=f"reply from {actor}.{verb}")
    if isinstance(reply, ErrorReply):
        raise errors.from_reply(reply.code, reply.message, f"{actor}.{verb}")
    if not isinstance(reply, reply_type):
        raise errors.SchemaError(f"{actor}.{verb} answered {type(reply).__name__}, expected {reply_type.__name__}")
    return reply
