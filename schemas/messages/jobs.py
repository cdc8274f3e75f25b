"""Compressor jobs, the error reply, and the notification of committed events."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from vmem.schemas.messages.bounds import BlockRefs, Msg, Ns, StoredEvent, TurnNo


class CompressJob(Msg, tag="compress", kw_only=True):
    """Summarise `sources`: evicted pages (scope "pages") or flushed messages ("conversation")."""

    ns: Ns
    job_id: Annotated[str, Meta(max_length=128)]
    sources: BlockRefs
    turn: TurnNo = 0
    scope: Literal["pages", "conversation"] = "pages"


class CompressDone(Msg, tag="compress_done", kw_only=True):
    job_id: str
    summary_id: str
    duplicate: bool = False


class ErrorReply(Msg, tag="error", kw_only=True):
    """What went wrong: `code` names the error class (vmem.errors), `message` says what to do."""

    code: str
    message: str


class EventsCommitted(Msg, tag="committed", kw_only=True):
    """Published on ``vmem.<tenant>.<agent>.events`` after an actor's append commits.

    `prev` is the namespace's last sequence before the append when the actor
    knew it (-1 when it did not), so a watcher that saw `prev` can take
    `events` as they are; otherwise (or when `events` is empty because the
    batch was large) it reads what it missed.  Delivery is at most once:
    watchers also poll.
    """

    ns: str
    first: int
    last: int
    prev: int = -1
    events: tuple[StoredEvent, ...] = ()
