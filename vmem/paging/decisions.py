"""The pager's decisions as functions: state and inputs in, events out.

The pager actor validates a request, gathers what a decision needs (search
results, block texts and token counts) and appends what these functions
return; replay calls the same functions to re-decide.  Nothing here does I/O
but reading blocks through a :class:`BlockSource`, reads no clock and breaks
ties by block id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import msgspec

from vmem.assembly.budget import DEFAULT_TABLE
from vmem.assembly.pack import BlockSource, PackInput, fifo, needed_blocks, tool_partner
from vmem.assembly.tokens import get_tokenizer
from vmem.paging.handoff import grant_allows
from vmem.paging.select import Policy, Selection, select_resident
from vmem.schemas.events import (
    BlockWritten,
    ErrorRaised,
    Event,
    HandoffRefused,
    MemoryPressureWarned,
    PageEvicted,
    PageFaultRaised,
    PageFaultResolved,
    PageLoaded,
    PageUnpinned,
    SlotDefined,
    TurnStarted,
)
from vmem.schemas.messages import DEFAULT_SLOT_LIMIT, MAX_IDS, MAX_LIMIT, Candidate, SearchRequest, TurnBegin
from vmem.state.blocks import make_block
from vmem.state.fold import State

SEARCH_LIMIT = 48  # candidates asked for, at least
CANDIDATE_TOKENS = 16  # and one per this many tokens of budget (a short message with its header)
PRESSURE_WARNING = 0.70
MESSAGE_OVERHEAD = 8  # role line and joins, per queued message

SYSTEM_PROMPTS = {
    "ask": (
        "You are an assistant whose memory is paged by vmem. The prompt holds only the pages that are "
        "resident now; everything else is stored and can be faulted in."
    ),
    "chat": (
        "You are a helpful agent with long-term memory managed by vmem. Your working context (State) is "
        "always in view and you edit it with core_memory_append and core_memory_replace. Everything ever said "
        "is in recall storage (conversation_search, conversation_search_date); facts you choose to keep go to "
        "archival storage (archival_memory_insert, archival_memory_search). Reply to the user with send_message."
    ),
}
DEFAULT_SLOTS = (
    ("persona", DEFAULT_SLOT_LIMIT, "I am a careful assistant. I keep what the user tells me about themselves in 'human'."),
    ("human", DEFAULT_SLOT_LIMIT, ""),
)
_BLOCK_REF = re.compile(r"\b[0-9a-f]{32}\b")


def search_request(state: State, ns: str, query: str, budget: int) -> SearchRequest:
    """What the pager asks the retriever for, to resolve a fault on `query` within `budget` tokens.

    Enough candidates to fill the budget with small blocks: at least
    SEARCH_LIMIT, and one per CANDIDATE_TOKENS tokens of budget, so that a
    large budget is not left empty for want of candidates (at 4,096 tokens,
    48 candidates of a typical 40-token message fill only half of it).

    The message queue (and the conversation summary at its head) is left
    out: the packer shows it in Recent, never in Retrieved, so such
    candidates would only take places in the list; and the turn's own
    question, the newest message, would be its own best match.
    """
    shown = fifo(state) + ([state.conversation_summary] if state.conversation_summary else [])
    return SearchRequest(ns=ns, query=query, limit=min(MAX_LIMIT, max(SEARCH_LIMIT, budget // CANDIDATE_TOKENS)),
                         exclude=tuple(shown[-MAX_IDS:]))


# -- turns -----------------------------------------------------------------------------------


def begin_turn(state: State, ns: str, begin: TurnBegin, *, budget: int) -> tuple[int, list[Event]]:
    """The events that start the next turn: (first time) the system block and default slots, the message."""
    turn = state.turn + 1
    events: list[Event] = []
    if not any(state.blocks[b].kind == "system" for b in state.pinned if b in state.blocks):
        system = make_block(ns, "system", "system", SYSTEM_PROMPTS[begin.mode])
        events += [system, PageLoaded(ns=ns, block_id=system.block_id, turn=turn, reason="pin")]
    if begin.mode == "chat" and not state.slots:
        events += [SlotDefined(ns=ns, label=label, limit=limit, value=value) for label, limit, value in DEFAULT_SLOTS]
    attrs = {"turn": str(turn)} | ({"when": begin.when} if begin.when else {})
    message = make_block(ns, "message", "user", begin.message, attrs)
    events += [message, TurnStarted(ns=ns, turn=turn, question=begin.message, budget=budget, model=begin.model,
                                    block_id=message.block_id)]
    return turn, events


def query_refs(state: State, query: str) -> tuple[str, ...]:
    """Full block ids written in a query that name blocks of the namespace: asked for explicitly."""
    return tuple(b for b in dict.fromkeys(_BLOCK_REF.findall(query)) if b in state.blocks)


# -- faults ----------------------------------------------------------------------------------


def selection_input(
    source: BlockSource, ns: str, state: State, ids: Sequence[str], *, turn: int, attempt: int, budget: int,
    tokenizer: str,
) -> PackInput:
    """What the selection needs: the state, and texts and token counts of the blocks involved."""
    wanted = set(needed_blocks(state)) | set(ids)
    wanted |= {p for b in list(wanted) if (p := tool_partner(state, b))}
    ordered = sorted(wanted)
    tok = get_tokenizer(tokenizer)
    return PackInput(
        state=state,
        blocks=source.get_many(ns, ordered),
        block_tokens=source.token_counts(ns, ordered, tok),
        turn=turn,
        attempt=attempt,
        budget=budget,
    )


def decide_fault(
    source: BlockSource,
    ns: str,
    state: State,
    *,
    fault_id: str,
    turn: int,
    attempt: int,
    budget: int,
    tokenizer: str,
    candidates: tuple[Candidate, ...],
    explicit: tuple[str, ...],
    policy: Policy,
    query: str,
    source_kind: str,
    raise_event: bool,
) -> tuple[list[Event], Selection]:
    """The events a fault resolves to, from `state`: what is loaded and what is evicted, and why."""
    inp = selection_input(
        source, ns, state, [c.block_id for c in candidates] + list(explicit),
        turn=turn, attempt=attempt, budget=budget, tokenizer=tokenizer,
    )
    sel = select_resident(inp, candidates, get_tokenizer(tokenizer).count, explicit=explicit, policy=policy, query=query)
    events: list[Event] = []
    if raise_event:
        events.append(PageFaultRaised(ns=ns, fault_id=fault_id, turn=turn, query=query, block_ids=explicit,
                                      source=source_kind))  # type: ignore[arg-type]
    events += [PageEvicted(ns=ns, block_id=b, turn=turn, reason=policy) for b in sel.evict]
    events += [PageLoaded(ns=ns, block_id=b, turn=turn, reason="fault", passage=sel.passages.get(b, (0, 0)))
               for b in sel.load]
    events.append(
        PageFaultResolved(
            ns=ns, fault_id=fault_id, turn=turn, loaded=sel.load, evicted=sel.evict, candidates=sel.trace,
            explicit=explicit, budget=budget, policy=policy, tokenizer=tokenizer, attempt=attempt, query=query,
        )
    )
    return events, sel


def unresolved_fault(ns: str, *, fault_id: str, turn: int, error: str) -> list[Event]:
    """A fault that cannot be resolved: the error the model sees, and the fault closed."""
    return [
        ErrorRaised(ns=ns, turn=turn, where="pager.fault", code="fault_unresolved", message=error),
        PageFaultResolved(ns=ns, fault_id=fault_id, turn=turn, error=error),
    ]


def evicted_pages(state: State, evicted: Sequence[str]) -> tuple[str, ...]:
    """Which evicted blocks get summaries: document pages.

    Evicted messages are already covered by the conversation's recursive
    summary, and summaries, facts and tool results are small: they simply
    stay reloadable by id.
    """
    return tuple(b for b in evicted if b in state.blocks and state.blocks[b].kind == "page")


def job_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16]


# -- eviction and pins --------------------------------------------------------------------------


class EvictDecision(msgspec.Struct, frozen=True):
    events: list[Event]
    evicted: tuple[str, ...]
    refused: tuple[str, ...]


def decide_evict(state: State, ns: str, block_ids: Sequence[str], *, turn: int) -> EvictDecision:
    """Evict what is resident and not pinned; pinned blocks are refused, with an error event."""
    pinned = set(state.pinned)
    refused = tuple(b for b in block_ids if b in pinned)
    evicted = tuple(dict.fromkeys(b for b in block_ids if b in state.resident and b not in pinned))
    events: list[Event] = [PageEvicted(ns=ns, block_id=b, turn=turn, reason="request") for b in evicted]
    if refused:
        events.append(ErrorRaised(ns=ns, turn=turn, where="pager.evict", code="pinned",
                                  message=f"pinned blocks cannot be evicted: {', '.join(refused)}"))
    return EvictDecision(events, evicted, refused)


def decide_pin(state: State, ns: str, block_ids: Sequence[str], *, pin: bool, turn: int) -> tuple[list[Event], tuple[str, ...], tuple[str, ...]]:
    """Pin (load and keep) or unpin blocks: (events, changed, unknown)."""
    unknown = tuple(b for b in block_ids if b not in state.blocks)
    known = [b for b in dict.fromkeys(block_ids) if b in state.blocks]
    if pin:
        changed = tuple(b for b in known if b not in state.pinned)
        return [PageLoaded(ns=ns, block_id=b, turn=turn, reason="pin") for b in changed], changed, unknown
    changed = tuple(b for b in known if b in state.pinned)
    return [PageUnpinned(ns=ns, block_id=b, turn=turn) for b in changed], changed, unknown


# -- the message queue ---------------------------------------------------------------------------


def queue_limit(budget: int) -> int:
    """The message queue's share of a prompt budget: Recent's share in the section table."""
    return int(budget * next(s.max_share for s in DEFAULT_TABLE if s.name == "Recent"))


def flush_plan(state: State, queue: list[str], sizes: list[int]) -> list[str]:
    """The oldest messages holding about half the queue's tokens, never splitting a tool pair."""
    half = sum(sizes) // 2
    out: list[str] = []
    taken = 0
    for bid, size in zip(queue[:-1], sizes):  # the newest message always stays
        if taken >= half:
            break
        out.append(bid)
        taken += size
    # Cut back until every tool call in the flush has its result in it too
    # (a call still waiting for one is never flushed).
    chosen = set(out)

    def split(b: str) -> bool:
        meta = state.blocks.get(b)
        partner = tool_partner(state, b)
        return partner not in chosen if partner else (meta is not None and meta.kind == "tool_call")

    while out and any(split(b) for b in out):
        chosen.discard(out.pop())
    return out


class Pressure(msgspec.Struct, frozen=True):
    """Memory pressure on the message queue: warn (events), flush (these messages), or nothing."""

    warn: list[Event]
    flush: tuple[str, ...]


def queue_pressure(source: BlockSource, state: State, ns: str, *, turn: int, budget: int, tokenizer: str) -> Pressure:
    """Warn at 70% of the queue's share of the budget (once per crossing); flush at 100%.

    A flush takes the oldest part of the queue (about half, never splitting a
    tool call from its result, never the newest message).
    """
    queue = fifo(state)
    if len(queue) < 2:
        return Pressure([], ())
    counts = source.token_counts(ns, queue, get_tokenizer(tokenizer))
    sizes = [counts.get(b, 0) + MESSAGE_OVERHEAD for b in queue]
    total = sum(sizes)
    limit = queue_limit(budget)
    if total < limit:
        if total >= PRESSURE_WARNING * limit and not state.pressure_warned:
            return Pressure([MemoryPressureWarned(ns=ns, turn=turn, queue_tokens=total, limit_tokens=limit)], ())
        return Pressure([], ())
    return Pressure([], tuple(flush_plan(state, queue, sizes)))


# -- hand-off pointers ----------------------------------------------------------------------------


class ImportCopies(msgspec.Struct, frozen=True):
    """Blocks copied in from a hand-off's source, and the pointers refused at page-in."""

    events: list[Event]
    refused: tuple[str, ...]


def import_copies(
    source: BlockSource,
    state: State,
    ns: str,
    ids: Sequence[str],
    *,
    turn: int,
    load: bool,
    grants: Mapping[str, State],
) -> ImportCopies:
    """Page in hand-off pointers: copy the blocks an import named from its source namespace.

    The grant is checked again here, at page-in, not only at import: a
    pointer into another tenant whose grant has been revoked is refused.
    """
    by_source: dict[str, list[str]] = {}
    for b in ids:
        src = state.imports.get(b)
        if src is not None:
            by_source.setdefault(src, []).append(b)
    copies: list[Event] = []
    refused: list[str] = []
    for src, wanted in sorted(by_source.items()):
        if not grant_allows(src, ns, grants.get(src.split("/")[0])):
            refused += wanted
            continue
        found = source.get_many(src, wanted)
        copies += [msgspec.structs.replace(found[b], ns=ns) for b in wanted if b in found]
    present = {c.block_id for c in copies if isinstance(c, BlockWritten)} | set(state.blocks)
    loads: list[Event] = [PageLoaded(ns=ns, block_id=b, turn=turn, reason="prefetch") for b in ids if load and b in present]
    events = [*copies, *loads]
    for src, wanted in sorted(by_source.items()):
        dropped = tuple(b for b in wanted if b in refused)
        if dropped:
            events.append(HandoffRefused(ns=ns, source_ns=src, block_ids=dropped, turn=turn))
    return ImportCopies(events, tuple(refused))
