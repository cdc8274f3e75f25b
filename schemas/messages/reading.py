"""Messages of the reader: every read is a request, answered for the caller's namespace only."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from vmem.schemas.events import Event, PromptPacked
from vmem.schemas.messages.bounds import MAX_READ, Msg, Name, Ns, Seq, StoredEvent, TurnNo


class ReadRequest(Msg, tag="read", kw_only=True):
    """Events of `ns` after sequence `after` (optionally only some event types)."""

    ns: Ns
    after: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_READ)] = 1000
    kinds: Annotated[tuple[Name, ...], Meta(max_length=64)] = ()


class ReadReply(Msg, tag="read_reply", kw_only=True):
    """`events` (in order); `through` is the last sequence examined, `head` the namespace's last."""

    events: tuple[StoredEvent, ...]
    through: int = 0
    head: int = 0


class TailRequest(Msg, tag="tail", kw_only=True):
    ns: Ns
    n: Annotated[int, Meta(ge=1, le=MAX_READ)] = 20


class BlockRequest(Msg, tag="block", kw_only=True):
    """A block by id or by a unique prefix of at least 8 hex digits."""

    ns: Ns
    block_id: Annotated[str, Meta(min_length=8, max_length=64)]


class BlockReply(Msg, tag="block_reply", kw_only=True):
    block: Event  # always a BlockWritten


class TracesRequest(Msg, tag="traces", kw_only=True):
    ns: Ns
    turn: TurnNo


class TracesReply(Msg, tag="traces_reply", kw_only=True):
    traces: tuple[tuple[int, PromptPacked], ...]


class PromptRequest(Msg, tag="prompt", kw_only=True):
    """The exact prompt of one attempt of a turn (by default its last), re-rendered from the log."""

    ns: Ns
    turn: TurnNo
    attempt: Annotated[int, msgspec.Meta(ge=-1, le=1_000)] = -1  # -1: the last


class PromptReply(Msg, tag="prompt_reply", kw_only=True):
    """The re-rendered prompt, and whether its SHA-256 is the one the trace at `seq` recorded."""

    turn: int
    attempt: int
    seq: int
    prompt: str
    tokens: int
    sha256: str
    recorded_sha256: str
    equal: bool


class StateRequest(Msg, tag="state", kw_only=True):
    ns: Ns


class Slot(msgspec.Struct, frozen=True):
    """A working-context slot as the model sees it."""

    value: str
    version: int
    limit: int
    readonly: bool


class StateReply(Msg, tag="state_reply", kw_only=True):
    """A summary of a namespace's live state: enough to compare a replay and drive a client."""

    state_hash: str
    head: int
    turn: int
    resident: tuple[str, ...]
    pinned: tuple[str, ...]
    slots: tuple[tuple[str, Slot], ...] = ()
    counters: tuple[tuple[str, int], ...] = ()
    rejected: tuple[tuple[int, str], ...] = ()  # stored records skipped by validation: (seq, reason)


class ReplayRequest(Msg, tag="replay", kw_only=True):
    ns: Ns
    until: Seq | None = None
    verify: bool = True


class ReplayReport(Msg, tag="replay_report", kw_only=True):
    """The JSON of ``vmem replay --json``."""

    ns: str
    events: int
    until: int
    state_hash: str
    live_state_hash: str
    equal: bool
    prompts_checked: int = 0
    prompts_equal: int = 0
    first_prompt_mismatch: int = 0
    decisions_checked: int = 0
    decisions_equal: int = 0
    first_decision_mismatch: int = 0
    rejected: int = 0  # stored records skipped by validation (see vmem/state/validate.py)
    first_rejected: int = 0
    rejected_reason: str = ""


class NamespacesRequest(Msg, tag="namespaces", kw_only=True):
    """Sent on ``vmem.<tenant>._tenant.reader.namespaces``: the tenant's namespaces."""

    ns: Ns


class NamespacesReply(Msg, tag="namespaces_reply", kw_only=True):
    namespaces: tuple[str, ...]
