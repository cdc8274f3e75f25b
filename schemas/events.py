"""Domain events: every state change of a namespace, as frozen msgspec Structs.

One tagged union, :data:`Event`.  Each event carries its namespace (`ns`);
its schema version travels in the stored record's header (see
:mod:`vmem.schemas.codec`) and is the class attribute ``VERSION``.  Evolution is
additive: a new field gets a default.  A renamed or removed field bumps
``VERSION`` and registers an upcaster in :mod:`vmem.schemas.upcast`.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Union

import msgspec


# gc=False: events hold no reference cycles, and leaving them untracked by the
# cycle collector keeps replay (hundreds of thousands of events) fast.
class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True, gc=False):
    VERSION: ClassVar[int] = 1
    ns: str


BlockKind = Literal["page", "message", "summary", "tool_call", "tool_result", "system", "task", "fact"]
EdgeKind = Literal["follows", "summarizes", "result_of"]


class BlockWritten(_Event, tag="block_written"):
    """A block entered the store.  Its id is the hash of (kind, role, text, attrs)."""

    block_id: str
    kind: BlockKind
    role: str
    text: str
    attrs: tuple[tuple[str, str], ...] = ()


class EdgeAdded(_Event, tag="edge_added"):
    """A typed edge: `src` follows / summarizes / is the result of `dst`."""

    src: str
    dst: str
    kind: EdgeKind


class DocumentIngested(_Event, tag="document_ingested"):
    """A whole document was split into `pages` pages (first..last block ids)."""

    doc_id: str
    source: str
    pages: int
    first: str
    last: str
    bytes: int


class TurnStarted(_Event, tag="turn_started"):
    """A turn began: the question and the token budget it must fit."""

    turn: int
    question: str
    budget: int
    model: str
    block_id: str = ""


class PageLoaded(_Event, tag="page_loaded"):
    """A block became resident (L1) for a reason: fault, prefetch or pin.

    `passage` is set when only part of the block is resident: the character
    offsets [start, end) of the span of its text the prompt shows (a page
    too large for what the budget had left).  (0, 0), the default, is the
    whole block; loading a resident block again changes how it is shown.
    """

    block_id: str
    turn: int
    reason: Literal["fault", "prefetch", "pin"] = "fault"
    passage: tuple[int, int] = (0, 0)


class PageUnpinned(_Event, tag="page_unpinned"):
    """A pinned block may be evicted again (it stays resident until it is)."""

    block_id: str
    turn: int = 0


class PageEvicted(_Event, tag="page_evicted"):
    """A resident block left L1; its full text stays reloadable by id.

    Version 2 renamed v1's `policy` to `reason`.
    """

    VERSION: ClassVar[int] = 2
    block_id: str
    turn: int
    reason: str = "lru"


class PageFaultRaised(_Event, tag="page_fault_raised"):
    """Someone (the model or the pager) asked for what is not resident."""

    fault_id: str
    turn: int
    query: str = ""
    block_ids: tuple[str, ...] = ()
    source: Literal["model", "pager", "agent"] = "model"


class CandidateTrace(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One candidate of a selection: its scores, and whether it was chosen and if not, why."""

    block_id: str
    fused: float
    scores: dict[str, float] = {}
    chosen: bool = False
    reason: str = ""  # budget | integrity | pinned | duplicate, when not chosen


class PageFaultResolved(_Event, tag="page_fault_resolved"):
    """The pager's answer to a fault: what it loaded and what it evicted.

    `candidates`, `budget`, `policy`, `tokenizer` and `query` (whose terms
    choose the passage of a page shown in part) are the inputs of the
    decision, so replay can re-run it (re-decide) from the state before it.
    """

    fault_id: str
    turn: int
    loaded: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    error: str = ""
    candidates: tuple[CandidateTrace, ...] = ()
    explicit: tuple[str, ...] = ()
    budget: int = 0
    policy: str = ""
    tokenizer: str = ""
    attempt: int = 0
    query: str = ""


class SummaryCommitted(_Event, tag="summary_committed"):
    """A compressor job finished: `summary_id` summarises `sources`.

    `scope` says what was summarised: evicted document pages ("pages") or
    messages flushed from the queue ("conversation").  Version 2 added it;
    version 1 said so by a ``flush:`` prefix on the job id.
    """

    VERSION: ClassVar[int] = 2
    job_id: str
    summary_id: str
    sources: tuple[str, ...]
    compressor: str
    scope: Literal["pages", "conversation"] = "pages"


class SectionTrace(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    name: str
    budget: int
    tokens: int
    blocks: tuple[str, ...] = ()


class LeftOut(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    block_id: str
    section: str
    reason: Literal["budget", "integrity", "pinned", "duplicate", "not_resident"]


class PromptPacked(_Event, tag="prompt_packed"):
    """The trace of one packed prompt: what went in, what stayed out, and why."""

    turn: int
    attempt: int
    profile: str
    budget: int
    prompt_tokens: int
    prompt_sha256: str
    sections: tuple[SectionTrace, ...]
    left_out: tuple[LeftOut, ...] = ()
    tokenizer: str = "cl100k_base"
    candidates: tuple[CandidateTrace, ...] = ()
    retriever_errors: tuple[str, ...] = ()


class ModelResponded(_Event, tag="model_responded"):
    """What the model said (untrusted) and what it cost."""

    turn: int
    attempt: int
    model: str
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class TurnEnded(_Event, tag="turn_ended"):
    """The reducer accepted an answer for the turn."""

    turn: int
    answer: str
    cited: tuple[str, ...] = ()
    block_id: str = ""


class ErrorRaised(_Event, tag="error_raised"):
    """A recorded failure: shown to the model next step, never fatal to the log."""

    turn: int
    where: str
    code: str
    message: str
    call_id: str = ""


class SlotDefined(_Event, tag="slot_defined"):
    """A working-context slot exists: its label, size limit (characters) and first value.

    A read-only slot (for example the agent's persona set by its operator) can
    be read by the model but never edited by model output.
    """

    label: str
    limit: int
    value: str = ""
    readonly: bool = False


class SlotEdited(_Event, tag="slot_edited"):
    """A slot's new value (version n), with where the edit came from."""

    label: str
    version: int
    value: str
    op: Literal["append", "replace", "set"]
    turn: int = 0
    call_id: str = ""
    source: Literal["model", "user"] = "model"


class MemoryPressureWarned(_Event, tag="memory_pressure_warned"):
    """The message queue crossed the warning share of its budget (shown to the model once)."""

    turn: int
    queue_tokens: int
    limit_tokens: int


class QueueFlushed(_Event, tag="queue_flushed"):
    """The oldest messages left the queue for a recursive summary; they stay in recall."""

    turn: int
    flushed: tuple[str, ...]
    summary_id: str
    previous_summary: str = ""


class PermissionsSet(_Event, tag="permissions_set"):
    """The functions the model may call in this namespace (empty: all built-in ones)."""

    allowed: tuple[str, ...] = ()


class HandoffExported(_Event, tag="handoff_exported"):
    """A snapshot of pointers (not payloads) was exported from this namespace."""

    snapshot_id: str
    through_seq: int
    blocks: tuple[str, ...] = ()
    slots: tuple[tuple[str, int], ...] = ()


class HandoffImported(_Event, tag="handoff_imported"):
    """Pointers from another namespace's snapshot; their blocks page in lazily."""

    snapshot_id: str
    source_ns: str
    blocks: tuple[str, ...] = ()
    resident: tuple[str, ...] = ()
    summaries: tuple[str, ...] = ()
    slots: tuple[tuple[str, str], ...] = ()  # (label, value) copied at import: slots are small


class HandoffRefused(_Event, tag="handoff_refused"):
    """Hand-off pointers dropped at page-in: the grant that allowed them is gone."""

    source_ns: str
    block_ids: tuple[str, ...]
    turn: int = 0


class GrantIssued(_Event, tag="grant_issued"):
    """The source tenant lets `to_tenant` import hand-offs from `agents` ("*" = any)."""

    to_tenant: str
    agents: str = "*"


class GrantRevoked(_Event, tag="grant_revoked"):
    to_tenant: str


Event = Union[
    BlockWritten,
    EdgeAdded,
    DocumentIngested,
    TurnStarted,
    PageLoaded,
    PageEvicted,
    PageUnpinned,
    PageFaultRaised,
    PageFaultResolved,
    SummaryCommitted,
    PromptPacked,
    ModelResponded,
    TurnEnded,
    ErrorRaised,
    SlotDefined,
    SlotEdited,
    MemoryPressureWarned,
    QueueFlushed,
    PermissionsSet,
    HandoffExported,
    HandoffImported,
    HandoffRefused,
    GrantIssued,
    GrantRevoked,
]

EVENT_TYPES: tuple[type, ...] = Event.__args__  # type: ignore[attr-defined]
EVENT_BY_TAG: dict[str, type] = {t.__struct_config__.tag: t for t in EVENT_TYPES}
