"""Bus messages between clients and actors: requests, replies, notifications, as frozen Structs.

Requests go to ``vmem.<tenant>.<agent>.<actor>.<verb>``; every reply is a
:data:`Reply` (the answer type or an :class:`ErrorReply`), so a caller always
learns what went wrong on the other side.  Every field a caller controls is
bounded (lengths, counts, budgets): an oversize or malformed request is
refused while it is decoded, before any actor code runs.  ``vmem schema``
prints all of this as JSON Schema; a request may be sent as msgpack or as
JSON (the reply comes back in the same encoding).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

from vmem.schemas.events import CandidateTrace, Event, PromptPacked

# -- bounds on what a caller may send ---------------------------------------------------

MAX_NS = 129  # TENANT/AGENT: two tokens of at most 64 characters
MAX_QUERY = 16_384  # a question, a search query, a user message (characters)
MAX_TEXT = 1_048_576  # a model reply, a tool result (characters)
MAX_IDS = 512  # block ids in one request
MAX_BUDGET = 2_000_000  # prompt tokens: beyond any model window today
MIN_BUDGET = 64
MAX_LIMIT = 1_000  # search results
MAX_READ = 10_000  # events in one read
MAX_PAGES = 1_000  # pages in one ingest batch
MAX_PAGE_TEXT = 262_144  # characters of one page
MAX_CALLS = 64  # tool calls in one model reply
MAX_SLOT = 100_000  # characters a slot may hold
DEFAULT_SLOT_LIMIT = 2_000  # characters, when a slot is defined without a limit
MAX_LABEL = 64
MAX_SEQ = 2**63 - 1
MAX_TURN = 2**31 - 1

Ns = Annotated[str, Meta(min_length=3, max_length=MAX_NS)]
Query = Annotated[str, Meta(max_length=MAX_QUERY)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Name = Annotated[str, Meta(max_length=128)]
BlockRef = Annotated[str, Meta(max_length=64)]
BlockRefs = Annotated[tuple[BlockRef, ...], Meta(max_length=MAX_IDS)]
Budget = Annotated[int, Meta(ge=MIN_BUDGET, le=MAX_BUDGET)]
TurnNo = Annotated[int, Meta(ge=0, le=MAX_TURN)]
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="msg", omit_defaults=True):
    pass


class Candidate(msgspec.Struct, frozen=True, array_like=True):
    """A retrieval candidate: fused score and the per-retriever scores behind it."""

    block_id: str
    score: float
    scores: dict[str, float] = {}


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from a log, with its sequence."""

    seq: int
    event: Event


# -- retriever ---------------------------------------------------------------------------


class SearchRequest(_Msg, tag="search", kw_only=True):
    ns: Ns
    query: Query
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = 20
    exclude: BlockRefs = ()
    kinds: Annotated[tuple[Name, ...], Meta(max_length=16)] = (
        "page", "summary", "message", "fact", "tool_call", "tool_result",
    )


class SearchReply(_Msg, tag="search_reply", kw_only=True):
    candidates: tuple[Candidate, ...]
    index_seq: int = 0
    errors: tuple[str, ...] = ()  # retrievers that failed or timed out


class SyncRequest(_Msg, tag="sync", kw_only=True):
    """Bring the retriever's indexes up to the log's current end and commit (service-internal)."""

    ns: Ns


class SyncReply(_Msg, tag="sync_reply", kw_only=True):
    through_seq: int
    indexed: int


# -- pager and packer ------------------------------------------------------------------------


class TurnBegin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What starts a turn: the user's message, and which kind of agent asks.

    `mode` picks the system prompt the pager pins on a namespace's first turn
    ("ask": answer from ingested pages; "chat": an agent with MemGPT-style
    memory, whose first turn also defines the default slots).  `key` makes a
    retried begin start one turn, not two.  `when` is wall-clock time for
    people and for date search, recorded on the message, never read by fold.
    """

    message: Query
    model: Name = "offline"
    mode: Literal["ask", "chat"] = "ask"
    when: Annotated[str, Meta(max_length=64)] = ""
    key: Annotated[str, Meta(max_length=128)] = ""


class TurnRequest(_Msg, tag="turn", kw_only=True):
    """Prepare attempt `attempt` of turn `turn`: page in for `query`, pack the prompt.

    With `begin`, the pager first starts a new turn (its number is in the
    reply; `turn` is then ignored) from the user's message.
    """

    ns: Ns
    turn: TurnNo = 0
    attempt: Annotated[int, Meta(ge=0, le=1000)] = 0
    budget: Budget
    profile: Name = "offline"
    tokenizer: Name = "cl100k_base"
    query: Query = ""
    begin: TurnBegin | None = None


class PackRequest(_Msg, tag="pack", kw_only=True):
    """Render and trace the prompt of one attempt (service-internal: the pager asks)."""

    ns: Ns
    turn: TurnNo
    attempt: Annotated[int, Meta(ge=0, le=1000)]
    budget: Budget
    profile: Name = "offline"
    tokenizer: Name = "cl100k_base"
    candidates: tuple[CandidateTrace, ...] = ()  # the pager's selection, for the trace
    retriever_errors: tuple[str, ...] = ()


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A function call a model made: `arguments` is the JSON text exactly as it produced it."""

    id: Annotated[str, Meta(max_length=256)]
    name: Name
    arguments: Text


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One role-tagged message of a packed prompt.

    `role` is system, user, assistant or tool.  An assistant message may carry
    `tool_calls`; a tool message answers one call (`tool_call_id`).
    `cache_boundary` marks the end of the stable, cacheable prefix.
    """

    role: str
    content: str
    cache_boundary: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


class PackReply(_Msg, tag="pack_reply", kw_only=True):
    prompt: str
    messages: tuple[ChatMessage, ...]
    prompt_sha256: str
    prompt_tokens: int
    resident: tuple[str, ...]
    trace_seq: int = 0
    turn: int = 0
    # Set by the pager when the turn began with an implicit page fault.
    fault: bool = False
    loaded: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    summaries: tuple[str, ...] = ()


class EvictRequest(_Msg, tag="evict", kw_only=True):
    """Ask the pager to evict blocks (refused for pinned ones)."""

    ns: Ns
    turn: TurnNo = 0
    block_ids: BlockRefs


class EvictReply(_Msg, tag="evict_reply", kw_only=True):
    evicted: tuple[str, ...]
    refused: tuple[str, ...] = ()
    error: str = ""
    summaries: tuple[str, ...] = ()


class FaultRequest(_Msg, tag="fault", kw_only=True):
    """Page in what a query finds and/or named blocks.  `turn` 0: the namespace's current turn."""

    ns: Ns
    fault_id: Annotated[str, Meta(min_length=1, max_length=128)]
    turn: TurnNo = 0
    budget: Budget
    query: Query = ""
    block_ids: BlockRefs = ()
    tokenizer: Name = "cl100k_base"


class FaultReply(_Msg, tag="fault_reply", kw_only=True):
    loaded: tuple[str, ...]
    evicted: tuple[str, ...]
    summaries: tuple[str, ...] = ()
    error: str = ""


class PinRequest(_Msg, tag="pin", kw_only=True):
    """Pin blocks (resident, never evicted) or, with ``pin=False``, unpin them."""

    ns: Ns
    block_ids: BlockRefs
    pin: bool = True
    turn: TurnNo = 0


class PinReply(_Msg, tag="pin_reply", kw_only=True):
    changed: tuple[str, ...]
    unknown: tuple[str, ...] = ()


# -- reducer -----------------------------------------------------------------------------------


class ReduceRequest(_Msg, tag="reduce", kw_only=True):
    """A model reply to validate.  `agent_tools` names the agent's own tools.

    With a `budget`, a page fault the reply asks for is resolved before the
    reducer answers (the pages are in when the next attempt is packed); with
    `pack_next` too, a reply that does not end the turn (and leaves no tool of
    the agent's to run) comes back with the next attempt's prompt, so each
    further attempt costs the client one round trip.
    """

    ns: Ns
    turn: TurnNo
    attempt: Annotated[int, Meta(ge=0, le=1000)]
    model: Name
    text: Text
    input_tokens: Count = 0
    output_tokens: Count = 0
    tool_calls: Annotated[tuple[ToolCall, ...], Meta(max_length=MAX_CALLS)] = ()
    agent_tools: Annotated[tuple[Name, ...], Meta(max_length=MAX_CALLS)] = ()
    when: Annotated[str, Meta(max_length=64)] = ""  # wall-clock time for people, never folded
    budget: Budget | None = None
    tokenizer: Name = "cl100k_base"
    profile: Name = "offline"
    pack_next: bool = False


class ReduceReply(_Msg, tag="reduce_reply", kw_only=True):
    """What the reply meant.

    outcome: "answer" (a reply for the user), "fault" (page something in and
    ask again), "continue" (tool results to act on: another step), or
    "error" (shown to the model next step).
    """

    outcome: str
    answer: str = ""
    cited: tuple[str, ...] = ()
    fault_id: str = ""
    query: str = ""
    block_ids: tuple[str, ...] = ()
    error: str = ""
    heartbeat: bool = False
    agent_calls: tuple[ToolCall, ...] = ()
    errors: tuple[str, ...] = ()
    fault: FaultReply | None = None  # how the fault was resolved, when the request had a budget
    next: PackReply | None = None  # the next attempt's prompt, when asked for (`pack_next`)


class ToolResultsRequest(_Msg, tag="tool_results", kw_only=True):
    """Results of the agent's own tools, for calls the model made (call id, content)."""

    ns: Ns
    turn: TurnNo
    results: Annotated[tuple[tuple[Annotated[str, Meta(max_length=256)], Text], ...], Meta(max_length=MAX_CALLS)]


class ToolResultsReply(_Msg, tag="tool_results_reply", kw_only=True):
    accepted: tuple[str, ...]
    rejected: tuple[str, ...] = ()


class EndTurnRequest(_Msg, tag="end_turn", kw_only=True):
    """Close a turn the reducer did not close (no answer, or the steps ran out)."""

    ns: Ns
    turn: TurnNo
    answer: Text


class EndTurnReply(_Msg, tag="end_turn_reply", kw_only=True):
    seq: int


# -- memory: documents, slots, permissions, grants, hand-offs ------------------------------------


class PageIn(msgspec.Struct, frozen=True, array_like=True):
    """One page of a document, as the client's splitter made it."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_PAGE_TEXT)]
    heading: Annotated[str, Meta(max_length=256)] = ""


class IngestRequest(_Msg, tag="ingest", kw_only=True):
    """One batch of a document's pages, in order.

    `doc_id` names the document (the client uses its content hash) and
    `batch` numbers the batches from 0, so a batch sent twice commits once.
    `first_page` is the page number of the batch's first page; the last batch
    has `final` set and the document's `total_pages` and `bytes`.
    """

    ns: Ns
    doc_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{16,64}$")]
    source: Annotated[str, Meta(max_length=256)]
    batch: Count
    first_page: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    pages: Annotated[tuple[PageIn, ...], Meta(max_length=MAX_PAGES)]
    final: bool = False
    total_pages: Count = 0
    bytes: Annotated[int, Meta(ge=0, le=2**40)] = 0


class IngestReply(_Msg, tag="ingest_reply", kw_only=True):
    pages: int
    events: int
    duplicate: bool
    indexed: int = 0


class SlotRequest(_Msg, tag="slot", kw_only=True):
    """Define (or redefine) a working-context slot."""

    ns: Ns
    label: Annotated[str, Meta(min_length=1, max_length=MAX_LABEL)]
    limit: Annotated[int, Meta(ge=1, le=MAX_SLOT)] = DEFAULT_SLOT_LIMIT
    value: Annotated[str, Meta(max_length=MAX_SLOT)] = ""
    readonly: bool = False


class PermissionsRequest(_Msg, tag="permissions", kw_only=True):
    """The memory functions the model may call in a namespace (empty: all of them)."""

    ns: Ns
    allowed: Annotated[tuple[Name, ...], Meta(max_length=64)] = ()


class GrantRequest(_Msg, tag="grant", kw_only=True):
    """Sent on ``vmem.<tenant>._grants.memory.grant``: `tenant` lets `to_tenant` import its hand-offs."""

    ns: Ns
    to_tenant: Annotated[str, Meta(min_length=1, max_length=64)]
    agents: Annotated[str, Meta(min_length=1, max_length=4096)] = "*"
    revoke: bool = False


class Ack(_Msg, tag="ack", kw_only=True):
    seq: int = 0


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What `vmem handoff export` prints: pointers into the source namespace, not payloads.

    Only `snapshot_id` and `source_ns` are trusted on import: the importing
    side finds the `HandoffExported` event with that id in the source's log
    and takes the pointers from there, never from the file.
    """

    format: str = "vmem-handoff/1"
    snapshot_id: Annotated[str, Meta(max_length=64)] = ""
    source_ns: Ns
    through_seq: Seq
    resident: BlockRefs = ()
    summaries: BlockRefs = ()
    slots: Annotated[tuple[tuple[Annotated[str, Meta(max_length=MAX_LABEL)], int], ...], Meta(max_length=256)] = ()
    turn: TurnNo = 0


class ExportRequest(_Msg, tag="export", kw_only=True):
    ns: Ns


class ExportReply(_Msg, tag="export_reply", kw_only=True):
    snapshot: Snapshot


class ImportRequest(_Msg, tag="import", kw_only=True):
    """Import the snapshot `snapshot_id` exported by `source_ns` into `ns`."""

    ns: Ns
    source_ns: Ns
    snapshot_id: Annotated[str, Meta(pattern=r"^[0-9a-f]{24}$")]


class ImportReply(_Msg, tag="import_reply", kw_only=True):
    pointers: int
    duplicate: bool = False


# -- reader: every read is a request, answered for the caller's namespace only -------------------


class ReadRequest(_Msg, tag="read", kw_only=True):
    """Events of `ns` after sequence `after` (optionally only some event types)."""

    ns: Ns
    after: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_READ)] = 1000
    kinds: Annotated[tuple[Name, ...], Meta(max_length=64)] = ()


class ReadReply(_Msg, tag="read_reply", kw_only=True):
    """`events` (in order); `through` is the last sequence examined, `head` the namespace's last."""

    events: tuple[StoredEvent, ...]
    through: int = 0
    head: int = 0


class TailRequest(_Msg, tag="tail", kw_only=True):
    ns: Ns
    n: Annotated[int, Meta(ge=1, le=MAX_READ)] = 20


class BlockRequest(_Msg, tag="block", kw_only=True):
    """A block by id or by a unique prefix of at least 8 hex digits."""

    ns: Ns
    block_id: Annotated[str, Meta(min_length=8, max_length=64)]


class BlockReply(_Msg, tag="block_reply", kw_only=True):
    block: Event  # always a BlockWritten


class TracesRequest(_Msg, tag="traces", kw_only=True):
    ns: Ns
    turn: TurnNo


class TracesReply(_Msg, tag="traces_reply", kw_only=True):
    traces: tuple[tuple[int, PromptPacked], ...]


class StateRequest(_Msg, tag="state", kw_only=True):
    ns: Ns


class Slot(msgspec.Struct, frozen=True):
    """A working-context slot as the model sees it."""

    value: str
    version: int
    limit: int
    readonly: bool


class StateReply(_Msg, tag="state_reply", kw_only=True):
    """A summary of a namespace's live state: enough to compare a replay and drive a client."""

    state_hash: str
    head: int
    turn: int
    resident: tuple[str, ...]
    pinned: tuple[str, ...]
    slots: tuple[tuple[str, Slot], ...] = ()
    counters: tuple[tuple[str, int], ...] = ()
    rejected: tuple[tuple[int, str], ...] = ()  # stored records skipped by validation: (seq, reason)


class ReplayRequest(_Msg, tag="replay", kw_only=True):
    ns: Ns
    until: Seq | None = None
    verify: bool = True


class ReplayReport(_Msg, tag="replay_report", kw_only=True):
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


class NamespacesRequest(_Msg, tag="namespaces", kw_only=True):
    """Sent on ``vmem.<tenant>._tenant.reader.namespaces``: the tenant's namespaces."""

    ns: Ns


class NamespacesReply(_Msg, tag="namespaces_reply", kw_only=True):
    namespaces: tuple[str, ...]


# -- compressor jobs -------------------------------------------------------------------------------


class CompressJob(_Msg, tag="compress", kw_only=True):
    """Summarise `sources`: evicted pages (scope "pages") or flushed messages ("conversation")."""

    ns: Ns
    job_id: Annotated[str, Meta(max_length=128)]
    sources: BlockRefs
    turn: TurnNo = 0
    scope: Literal["pages", "conversation"] = "pages"


class CompressDone(_Msg, tag="compress_done", kw_only=True):
    job_id: str
    summary_id: str
    duplicate: bool = False


class ErrorReply(_Msg, tag="error", kw_only=True):
    """What went wrong: `code` names the error class (vmem.errors), `message` says what to do."""

    code: str
    message: str


# -- notifications -----------------------------------------------------------------------------------


class EventsCommitted(_Msg, tag="committed", kw_only=True):
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


Request = Union[
    SearchRequest, SyncRequest, PackRequest, TurnRequest, FaultRequest, EvictRequest, PinRequest, ReduceRequest,
    ToolResultsRequest, EndTurnRequest, IngestRequest, SlotRequest, PermissionsRequest, GrantRequest,
    ExportRequest, ImportRequest, ReadRequest, TailRequest, BlockRequest, TracesRequest, StateRequest,
    ReplayRequest, NamespacesRequest, CompressJob,
]
Reply = Union[
    SearchReply, SyncReply, PackReply, FaultReply, EvictReply, PinReply, ReduceReply, ToolResultsReply,
    EndTurnReply, IngestReply, Ack, ExportReply, ImportReply, ReadReply, BlockReply, TracesReply, StateReply,
    ReplayReport, NamespacesReply, CompressDone, ErrorReply,
]
REQUEST_TYPES: tuple[type, ...] = Request.__args__  # type: ignore[attr-defined]
REPLY_TYPES: tuple[type, ...] = Reply.__args__  # type: ignore[attr-defined]
