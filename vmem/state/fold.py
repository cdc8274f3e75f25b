"""Namespace state as a pure fold of its events, and its canonical hash.

Never rely on a dict's insertion order here or in what reads the state:
snapshots and the hash use a canonical encoding that sorts keys, so order
that matters lives in lists (``pinned``, ``messages``, edge lists) or is
derived from ``BlockMeta.born``.

The fold is one small function per event type, looked up by the event's
class.  It reads no clock and iterates nothing unordered: the only notion of
time is `clock`, the number of events folded so far.  Sequences are not part
of the state, so the same events fold to the same hash on any log backend.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import msgspec

from vmem.schemas import events as ev
from vmem.schemas.messages import DEFAULT_SLOT_LIMIT, Slot


class BlockMeta(msgspec.Struct, array_like=True, gc=False):
    """What the pager needs to know of a block without reading its text."""

    kind: str
    role: str
    born: int  # clock at which the block was written: recency, and page order
    doc: str = ""
    page: int = -1


class DocMeta(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """An ingested document: where it came from, its first and last page blocks, and its page count."""

    source: str
    first: str
    last: str
    pages: int


class State(msgspec.Struct, kw_only=True):
    """Everything known about one namespace, rebuilt by folding its log."""

    ns: str
    clock: int = 0
    blocks: dict[str, BlockMeta] = {}
    # Page table.  L1 = resident (value: clock of last use); L2 = hot, i.e.
    # evicted but kept ready (value: clock of eviction).  Every other block is
    # L3 swap: indexed and reloadable by id.
    resident: dict[str, int] = {}
    # Resident blocks shown as a passage: block id -> (start, end) character
    # offsets into its text.  The whole block is one fault away.
    passages: dict[str, tuple[int, int]] = {}
    hot: dict[str, int] = {}
    pinned: list[str] = []
    # Conversation blocks (messages, tool calls and results) in log order.
    messages: list[str] = []
    # Typed edges, as src -> [(kind, dst)] in the order they were added, and
    # the same edges seen from dst (dst -> [(kind, src)]) for graph retrieval.
    edges: dict[str, list[tuple[str, str]]] = {}
    edges_in: dict[str, list[tuple[str, str]]] = {}
    # Every block in log order: recency without scanning the whole table.
    order: list[str] = []
    summaries: dict[str, list[str]] = {}  # summary id -> its sources
    summarized_by: dict[str, str] = {}  # source id -> latest summary id
    page_summaries: list[str] = []  # summaries of evicted pages, in log order
    docs: dict[str, DocMeta] = {}
    turn: int = 0
    # The last packed prompt: (turn, attempt) and the blocks it showed, which
    # is what the reducer accepts citations of.
    prompt_key: tuple[int, int] = (0, -1)
    prompt_blocks: list[str] = []
    last_error: str = ""
    open_faults: dict[str, int] = {}  # fault id -> turn
    counters: dict[str, int] = {}
    slots: dict[str, Slot] = {}  # working context, by label
    slot_order: list[str] = []
    # The message queue (FIFO) is messages[fifo_start:]; older ones were
    # flushed into the recursive summary `conversation_summary`.
    fifo_start: int = 0
    conversation_summary: str = ""
    pressure_warned: bool = False
    pressure_turn: int = 0
    allowed_functions: list[str] = []
    # Hand-off pointers not yet paged in: block id -> source namespace; and
    # those the importing agent pages in on its next turn.
    imports: dict[str, str] = {}
    import_resident: list[str] = []
    grants: dict[str, str] = {}  # to_tenant -> agents ("*")
    # Hand-off snapshots this namespace exported, by id: what an import takes.
    exports: dict[str, ev.HandoffExported] = {}
    # Tool calls still waiting for their result: call id -> tool_call block id.
    pending_calls: dict[str, str] = {}


_CONVERSATION = frozenset({"message", "tool_call", "tool_result"})


def _bump(state: State, name: str, by: int = 1) -> None:
    state.counters[name] = state.counters.get(name, 0) + by


def _block_written(s: State, e: ev.BlockWritten) -> None:
    if e.block_id in s.blocks:
        return  # content-addressed: the same block written twice is one block
    if s.imports:
        s.imports.pop(e.block_id, None)
    attrs = dict(e.attrs)
    page = attrs.get("page")
    s.blocks[e.block_id] = BlockMeta(e.kind, e.role, s.clock, attrs.get("doc", ""), int(page) if page else -1)
    s.order.append(e.block_id)
    if e.kind in _CONVERSATION:
        s.messages.append(e.block_id)
        call_id = attrs.get("call_id")
        if call_id:
            if e.kind == "tool_call":
                s.pending_calls[call_id] = e.block_id
            elif e.kind == "tool_result":
                s.pending_calls.pop(call_id, None)
    _bump(s, "blocks")


def _edge_added(s: State, e: ev.EdgeAdded) -> None:
    out = s.edges.setdefault(e.src, [])
    pair = (e.kind, e.dst)
    if pair not in out:
        out.append(pair)
        s.edges_in.setdefault(e.dst, []).append((e.kind, e.src))


def _document_ingested(s: State, e: ev.DocumentIngested) -> None:
    s.docs[e.doc_id] = DocMeta(e.source, e.first, e.last, e.pages)
    _bump(s, "documents")


def _turn_started(s: State, e: ev.TurnStarted) -> None:
    s.turn = max(s.turn, e.turn)
    s.last_error = ""
    _bump(s, "turns")


def _page_loaded(s: State, e: ev.PageLoaded) -> None:
    if e.block_id not in s.blocks:
        return  # only written blocks can be resident (a log from elsewhere may say otherwise)
    if s.import_resident and e.block_id in s.import_resident:
        s.import_resident.remove(e.block_id)
    s.hot.pop(e.block_id, None)
    s.resident[e.block_id] = s.clock
    start, end = e.passage
    if 0 <= start < end:
        s.passages[e.block_id] = (start, end)
    else:
        s.passages.pop(e.block_id, None)
    if e.reason == "pin" and e.block_id not in s.pinned:
        s.pinned.append(e.block_id)
    _bump(s, "loads")


def _page_unpinned(s: State, e: ev.PageUnpinned) -> None:
    if e.block_id in s.pinned:
        s.pinned.remove(e.block_id)


def _page_evicted(s: State, e: ev.PageEvicted) -> None:
    if s.resident.pop(e.block_id, None) is not None:
        s.passages.pop(e.block_id, None)
        s.hot[e.block_id] = s.clock
        _bump(s, "evictions")


def _fault_raised(s: State, e: ev.PageFaultRaised) -> None:
    s.open_faults[e.fault_id] = e.turn
    _bump(s, "faults")


def _fault_resolved(s: State, e: ev.PageFaultResolved) -> None:
    s.open_faults.pop(e.fault_id, None)
    if e.error:
        _bump(s, "fault_errors")


def _summary_committed(s: State, e: ev.SummaryCommitted) -> None:
    if e.summary_id in s.summaries:
        return  # a redelivered job commits once
    s.summaries[e.summary_id] = list(e.sources)
    for src in e.sources:
        s.summarized_by[src] = e.summary_id
    if e.scope == "pages":
        # Conversation summaries are shown through the queue (the latest one);
        # summaries of evicted pages are Background candidates, newest last.
        s.page_summaries.append(e.summary_id)
    _bump(s, "summaries")


def _prompt_packed(s: State, e: ev.PromptPacked) -> None:
    # Using a block in a prompt is what LRU means by "use".
    shown = []
    for section in e.sections:
        for bid in section.blocks:
            if bid in s.resident:
                s.resident[bid] = s.clock
            if not bid.startswith("~"):
                shown.append(bid)
    s.prompt_key = (e.turn, e.attempt)
    s.prompt_blocks = shown
    _bump(s, "prompts")


def _model_responded(s: State, e: ev.ModelResponded) -> None:
    _bump(s, "model_calls")
    _bump(s, "model_input_tokens", e.input_tokens)
    _bump(s, "model_output_tokens", e.output_tokens)


def _turn_ended(s: State, e: ev.TurnEnded) -> None:
    _bump(s, "answers")


def _error_raised(s: State, e: ev.ErrorRaised) -> None:
    s.last_error = f"{e.code}: {e.message}"
    _bump(s, "errors")


def _slot_defined(s: State, e: ev.SlotDefined) -> None:
    if e.label not in s.slots:
        s.slot_order.append(e.label)
    s.slots[e.label] = Slot(e.value, 0, e.limit, e.readonly)


def _slot_edited(s: State, e: ev.SlotEdited) -> None:
    slot = s.slots.get(e.label)
    if slot is not None:
        s.slots[e.label] = msgspec.structs.replace(slot, value=e.value, version=e.version)
        _bump(s, "slot_edits")


def _pressure(s: State, e: ev.MemoryPressureWarned) -> None:
    s.pressure_warned = True
    s.pressure_turn = e.turn
    _bump(s, "pressure_warnings")


def _flushed(s: State, e: ev.QueueFlushed) -> None:
    start = s.fifo_start
    n = len(e.flushed)
    if s.messages[start : start + n] == list(e.flushed):
        s.fifo_start = start + n  # the usual case: the oldest part of the queue
    else:
        flushed = set(e.flushed)
        tail = s.messages[start:]
        # Flushed messages move before the queue's start, in log order; they
        # stay in `messages` (recall storage holds every message ever).
        head = [m for m in tail if m in flushed]
        s.messages[start:] = head + [m for m in tail if m not in flushed]
        s.fifo_start = start + len(head)
    s.conversation_summary = e.summary_id
    s.pressure_warned = False
    _bump(s, "flushes")


def _permissions(s: State, e: ev.PermissionsSet) -> None:
    s.allowed_functions = list(e.allowed)


def _handoff_exported(s: State, e: ev.HandoffExported) -> None:
    s.exports[e.snapshot_id] = e
    _bump(s, "handoffs_exported")


def _handoff_imported(s: State, e: ev.HandoffImported) -> None:
    for b in e.blocks:
        if b not in s.blocks:
            s.imports[b] = e.source_ns
    s.import_resident = [b for b in (*e.resident, *e.summaries) if b not in s.blocks]
    for label, value in e.slots:
        if label not in s.slots:
            s.slot_order.append(label)
            s.slots[label] = Slot(value, 0, max(len(value), DEFAULT_SLOT_LIMIT), False)
    _bump(s, "handoffs_imported")


def _handoff_refused(s: State, e: ev.HandoffRefused) -> None:
    for b in e.block_ids:
        s.imports.pop(b, None)
    dropped = set(e.block_ids)
    s.import_resident = [b for b in s.import_resident if b not in dropped]
    _bump(s, "handoffs_refused")


def _grant_issued(s: State, e: ev.GrantIssued) -> None:
    s.grants[e.to_tenant] = e.agents


def _grant_revoked(s: State, e: ev.GrantRevoked) -> None:
    s.grants.pop(e.to_tenant, None)


_FOLD: dict[type, Callable[[State, object], None]] = {
    ev.BlockWritten: _block_written,
    ev.EdgeAdded: _edge_added,
    ev.DocumentIngested: _document_ingested,
    ev.TurnStarted: _turn_started,
    ev.PageLoaded: _page_loaded,
    ev.PageEvicted: _page_evicted,
    ev.PageUnpinned: _page_unpinned,
    ev.PageFaultRaised: _fault_raised,
    ev.PageFaultResolved: _fault_resolved,
    ev.SummaryCommitted: _summary_committed,
    ev.PromptPacked: _prompt_packed,
    ev.ModelResponded: _model_responded,
    ev.TurnEnded: _turn_ended,
    ev.ErrorRaised: _error_raised,
    ev.SlotDefined: _slot_defined,
    ev.SlotEdited: _slot_edited,
    ev.MemoryPressureWarned: _pressure,
    ev.QueueFlushed: _flushed,
    ev.PermissionsSet: _permissions,
    ev.HandoffExported: _handoff_exported,
    ev.HandoffImported: _handoff_imported,
    ev.HandoffRefused: _handoff_refused,
    ev.GrantIssued: _grant_issued,
    ev.GrantRevoked: _grant_revoked,
}
assert set(_FOLD) == set(ev.EVENT_TYPES), "every event type needs a fold function"


def apply(state: State, event: ev.Event) -> None:
    """Fold one event into `state` (in place).  Pure: no I/O, no clock."""
    _FOLD[type(event)](state, event)
    state.clock += 1


def fold(events: Iterable[ev.Event], state: State) -> State:
    """Fold many events into `state` and return it."""
    table = _FOLD
    clock = state.clock
    for event in events:
        table[type(event)](state, event)
        clock += 1
        state.clock = clock
    return state


_canonical = msgspec.msgpack.Encoder(order="deterministic")
_snapshot_decoder = msgspec.msgpack.Decoder(State)


def state_hash(state: State) -> str:
    """SHA-256 of the state's canonical encoding (sorted keys, fixed field order)."""
    return hashlib.sha256(_canonical.encode(state)).hexdigest()


def encode_snapshot(state: State) -> bytes:
    return _canonical.encode(state)


def decode_snapshot(data: bytes) -> State:
    return _snapshot_decoder.decode(data)
