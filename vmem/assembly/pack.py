"""The packer's pure logic: what each section holds, rendered and fitted exactly.

``pack`` is a function of (state, block texts, token counts, budget): no I/O,
no clock, ties broken by block id, so the same state packs to the same bytes.
The rendered prompt puts the stable sections (System, Task, Tools) first and
marks the end of that prefix as the cache boundary, so consecutive turns keep
a byte-identical prefix for providers' prompt caching.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import msgspec

from vmem.assembly.budget import (
    DEFAULT_TABLE,
    Item,
    SectionSpec,
    fill,
    section_footer,
    section_header,
)
from vmem.assembly.render import chat_message, render_block, render_passage
from vmem.assembly.tokens import Tokenizer, get_tokenizer
from vmem.errors import BudgetError
from vmem.schemas.events import (
    BlockWritten,
    CandidateTrace,
    LeftOut,
    PromptPacked,
    SectionTrace,
)
from vmem.schemas.messages import ChatMessage
from vmem.state.fold import State

# Render order: the stable prefix first (cacheable: instructions, tools and
# the working context, which changes only when edited), then what changes per
# turn.
STABLE = ("System", "Task", "Tools", "State")
RENDER_ORDER = ("System", "Task", "Tools", "State", "Plan", "Background", "Retrieved", "Recent")
# The message queue (FIFO) holds every unflushed message; the pager flushes it
# before it outgrows Recent's share.  A bound on what one pack looks at.
RECENT_WINDOW = 256

DEFAULT_TASK = "Answer the user's questions from the pages of the ingested documents."
# Every token of the fixed sections is taken from what the prompt can hold
# (at 512 tokens they were 40% of it): said once, tersely.
TOOLS_TEXT = (
    "page_fault: if the pages lack what you need, reply only PAGE_FAULT: <search words> "
    "(or PAGE_FAULT: #<block id>); vmem loads them and asks again.\n"
    "answer: otherwise answer, citing each page used as [block id]."
)


class Packed(msgspec.Struct, frozen=True):
    prompt: str
    messages: tuple[ChatMessage, ...]
    tokens: int
    sha256: str
    sections: tuple[SectionTrace, ...]
    left_out: tuple[LeftOut, ...]


class PackInput(msgspec.Struct, frozen=True):
    state: State
    blocks: Mapping[str, BlockWritten]
    block_tokens: Mapping[str, int]
    turn: int
    attempt: int
    budget: int


def fifo(state: State) -> list[str]:
    """The message queue: unflushed conversation blocks, oldest first."""
    start = max(state.fifo_start, len(state.messages) - RECENT_WINDOW)
    return state.messages[start:]


def needed_blocks(state: State) -> list[str]:
    """Ids whose text the packer may need for `state` (to fetch before packing)."""
    ids = set(state.pinned)
    ids.update(fifo(state))
    if state.conversation_summary:
        ids.add(state.conversation_summary)
    ids.update(state.resident)
    ids.update(background_summaries(state))
    for bid in list(ids):
        ids.update(partner for _kind, partner in state.edges.get(bid, ()) if _kind == "result_of")
    return sorted(ids)


BACKGROUND_WINDOW = 32  # the newest page summaries considered for Background


def background_summaries(state: State) -> list[str]:
    """Summaries of recently evicted pages, oldest first: the Background candidates."""
    return state.page_summaries[-BACKGROUND_WINDOW:]


def integrity_group(state: State, bid: str) -> str:
    """A tool call and its result share a group: kept or dropped together."""
    meta = state.blocks.get(bid)
    if meta is None or meta.kind not in ("tool_call", "tool_result"):
        return ""
    for kind, other in state.edges.get(bid, ()):
        if kind == "result_of":  # bid is the result; other is its call
            return other
    return bid if meta.kind == "tool_call" else ""


def tool_partner(state: State, bid: str) -> str:
    """The other half of a tool call/result pair: "" if `bid` is neither, or its call has no result yet."""
    meta = state.blocks.get(bid)
    if meta is None or meta.kind not in ("tool_call", "tool_result"):
        return ""
    if meta.kind == "tool_result":
        return integrity_group(state, bid)
    for kind, src in state.edges_in.get(bid, ()):
        if kind == "result_of":
            return src
    return ""


def _slots_text(s: State) -> str:
    """The working context: each slot as a tagged block, in definition order."""
    parts = []
    for label in s.slot_order:
        slot = s.slots[label]
        flag = ", read-only" if slot.readonly else ""
        parts.append(f"<{label} version={slot.version} chars={len(slot.value)}/{slot.limit}{flag}>\n{slot.value}\n</{label}>")
    return "\n".join(parts)


def _has_plan(s: State, turn: int, attempt: int) -> bool:
    """Whether this step has a plan: a later step, a memory-pressure warning, or an error to show.

    A turn's first step has none: what to do is the Tools section's, and every
    token of a fixed section is one the Retrieved pages cannot use.
    """
    return attempt > 0 or bool(s.last_error) or (s.pressure_warned and s.pressure_turn == turn)


def _plan_text(s: State, turn: int, attempt: int) -> str:
    pages_resident = sum(1 for b in s.resident if b in s.blocks and s.blocks[b].kind != "system")
    c = s.counters
    lines = [
        f"turn {turn}, step {attempt + 1}; blocks resident {pages_resident}, hot {len(s.hot)}, "
        f"stored {c.get('blocks', 0)}, summaries {c.get('summaries', 0)}, faults {c.get('faults', 0)}, "
        f"evictions {c.get('evictions', 0)}, queue flushes {c.get('flushes', 0)}",
    ]
    if attempt:
        lines.append("Act on the results above: answer, or call another function.")
    if s.pressure_warned and s.pressure_turn == turn:
        lines.append("Memory pressure: the message queue is near its limit and older messages will be "
                     "summarised soon; save what matters with core_memory_append or archival_memory_insert.")
    # The model sees what was wrong with its last step (reducer errors).
    if s.last_error:
        lines.append(f"Last step was rejected: {s.last_error}")
    return "\n".join(lines)


class SectionItems(msgspec.Struct):
    by_section: dict[str, list[Item]]
    left_out: list[LeftOut]


# Rendered blocks and their counts, by (block id, counting function): a
# block's id is the hash of everything its rendering reads (kind, role, text,
# attributes), so the same id always renders to the same text.  Bounded.
_RENDERED: dict[tuple[str, Callable[[str], int]], tuple[str, int]] = {}
RENDERED_ENTRIES = 16384


def block_item(inp: PackInput, bid: str, count: Callable[[str], int], passage: tuple[int, int] | None = None) -> Item:
    """The item for a block (or a passage of it): its rendered text, counted exactly.

    A whole block's count is the store's count of its text plus its header's.
    """
    key = (bid, count) if passage is None else (f"{bid}:{passage[0]}:{passage[1]}", count)
    hit = _RENDERED.get(key)
    if hit is None:
        b = inp.blocks[bid]
        body = inp.block_tokens.get(bid)
        if passage is not None:
            text = render_passage(b, *passage)
            tokens = count(text) + 1
        else:
            text = render_block(b)
            tokens = count(text) if body is None else body + count(text[: len(text) - len(b.text)]) + 1
        if len(_RENDERED) >= RENDERED_ENTRIES:
            _RENDERED.clear()  # cheaper than tracking age; refilled within a turn or two
        hit = _RENDERED[key] = (text, tokens)
    text, tokens = hit
    meta = inp.state.blocks.get(bid)
    return Item(bid, text, tokens, meta.born if meta else 0, integrity_group(inp.state, bid))


def section_items(
    inp: PackInput, count: Callable[[str], int], *, retrieved: Sequence[str] | None = None, recent: bool = True
) -> SectionItems:
    """Every section's candidate items, each in preference order.

    Retrieved holds the resident blocks (by log order), or `retrieved` when the
    pager asks what would fit if those were resident instead.
    """
    s = inp.state
    blocks = inp.blocks
    left: list[LeftOut] = []

    def gen(name: str, text: str) -> Item:
        return Item(f"~{name.lower()}", text, count(text) + 1)

    pinned = set(s.pinned)
    system = [block_item(inp, b, count) for b in s.pinned if b in blocks and blocks[b].kind == "system"]
    task = [block_item(inp, b, count) for b in s.pinned if b in blocks and blocks[b].kind == "task"]
    # Recent is offered newest first so that, if it must be cut, the oldest go.
    # A tool call still waiting for its result is left out: providers reject
    # a call without its result, and the pair is one unit.
    recent_ids = []
    if recent:
        for b in reversed(fifo(s)):
            if b not in blocks:
                continue
            if blocks[b].kind == "tool_call" and dict(blocks[b].attrs).get("call_id") in s.pending_calls:
                left.append(LeftOut(block_id=b, section="Recent", reason="integrity"))
                continue
            recent_ids.append(b)
        if s.conversation_summary in blocks:
            recent_ids.append(s.conversation_summary)
    in_recent = set(recent_ids)
    resident_view = retrieved is None  # shown as the state has them, passages included
    if retrieved is None:
        retrieved = sorted((b for b in s.resident if b not in pinned), key=lambda b: (s.blocks[b].born, b))
    chosen_retrieved = []
    for b in retrieved:
        partner = tool_partner(s, b)
        if b in pinned:
            left.append(LeftOut(block_id=b, section="Retrieved", reason="pinned"))
        elif b in in_recent or partner in in_recent:
            left.append(LeftOut(block_id=b, section="Retrieved", reason="duplicate"))
        elif b not in blocks or (partner and partner not in blocks):
            # A half of a tool pair alone would split it: both or neither.
            left.append(LeftOut(block_id=b, section="Retrieved", reason="integrity"))
        else:
            chosen_retrieved.append(b)
    shown = set(chosen_retrieved)
    background: list[Item] = []
    for sid in reversed(background_summaries(s)):
        if sid in shown or sid in in_recent:
            continue
        if any(src in shown for src in s.summaries[sid]):
            # A summary stands in for its pages, never beside them.
            left.append(LeftOut(block_id=sid, section="Background", reason="integrity"))
        elif sid in blocks:
            background.append(block_item(inp, sid, count))
    return SectionItems(
        by_section={
            "System": system,
            "Task": task or [gen("Task", DEFAULT_TASK)],
            "Tools": [gen("Tools", TOOLS_TEXT)],
            "State": [gen("State", _slots_text(s))] if s.slot_order else [],
            "Plan": [gen("Plan", _plan_text(s, inp.turn, inp.attempt))] if _has_plan(s, inp.turn, inp.attempt) else [],
            "Retrieved": [block_item(inp, b, count, s.passages.get(b) if resident_view else None) for b in chosen_retrieved],
            "Recent": [block_item(inp, b, count) for b in recent_ids],
            "Background": background,
        },
        left_out=left,
    )


def _render(chosen: Mapping[str, list[Item]], blocks: Mapping[str, BlockWritten]) -> tuple[str, tuple[ChatMessage, ...]]:
    def ordered(name: str) -> list[Item]:
        return sorted(chosen.get(name) or [], key=lambda i: (i.order, i.id))

    def section(name: str) -> str:
        items = ordered(name)
        if not items:
            return ""
        return section_header(name) + "\n\n".join(i.text for i in items) + section_footer(name)

    stable = "\n\n".join(t for t in (section(n) for n in STABLE) if t)
    context = "\n\n".join(t for t in (section(n) for n in RENDER_ORDER if n not in STABLE and n != "Recent") if t)
    recent = section("Recent")
    prompt = "\n\n".join(t for t in (stable, context, recent) if t) + "\n"
    # Chat form: the stable prefix is the first system message (the cache
    # boundary), this turn's context the second, then the conversation as
    # role-tagged messages ending with the newest.
    messages = [ChatMessage(role="system", content=stable, cache_boundary=True)]
    if context:
        messages.append(ChatMessage(role="system", content=context))
    messages += [chat_message(blocks[i.id], i.text) for i in ordered("Recent") if i.id in blocks]
    return prompt, tuple(messages)


def pack(inp: PackInput, tokenizer: Tokenizer, table: Sequence[SectionSpec] = DEFAULT_TABLE) -> Packed:
    """Fill each section within the budget, render, and fit exactly.

    Raises BudgetError when the mandatory sections alone exceed the budget.
    """
    count = tokenizer.count
    items = section_items(inp, count)
    # Retrieved holds what the pager made resident, sized by the same fill.
    result = fill(items.by_section, inp.budget, count, table, decided=frozenset({"Retrieved"}))
    chosen = result.chosen
    left = items.left_out + result.left_out
    # The sum of per-item counts is an estimate (tokens can merge across
    # joins); the rendered prompt is counted exactly and trimmed until it fits.
    drop_order = [t.name for t in sorted(table, key=lambda t: -t.priority) if not t.mandatory]
    while True:
        prompt, messages = _render(chosen, inp.blocks)
        tokens = count(prompt)
        if tokens <= inp.budget:
            break
        for name in drop_order:
            taken = chosen.get(name) or []
            if taken and not (name == "Recent" and len(taken) == 1):
                dropped = taken.pop()
                # A tool call and its result leave together.
                gone = [dropped] + [i for i in taken if dropped.group and i.group == dropped.group]
                taken[:] = [i for i in taken if i not in gone]
                left += [LeftOut(block_id=i.id, section=name, reason="budget") for i in gone]
                break
        else:
            raise BudgetError(
                f"budget {inp.budget} tokens cannot hold the mandatory sections ({tokens} tokens); raise --budget"
            )
    sections = tuple(
        SectionTrace(
            name=name,
            budget=result.allotted.get(name, 0),
            tokens=sum(i.tokens for i in chosen.get(name, [])),
            blocks=tuple(i.id for i in chosen.get(name, [])),
        )
        for name in RENDER_ORDER
    )
    return Packed(
        prompt=prompt,
        messages=messages,
        tokens=tokens,
        sha256=hashlib.sha256(prompt.encode()).hexdigest(),
        sections=sections,
        left_out=tuple(left),
    )



class BlockSource(Protocol):
    """Where packing and paging read block texts and token counts (the home's block store)."""

    def get_many(self, ns: str, bids: Iterable[str]) -> dict[str, BlockWritten]: ...

    def token_counts(self, ns: str, bids: Iterable[str], tokenizer: Tokenizer) -> dict[str, int]: ...


def pack_state(
    source: BlockSource, ns: str, state: State, *, turn: int, attempt: int, budget: int, tokenizer: str
) -> Packed:
    """Pack `state` of `ns`, reading block texts and token counts from `source` (the block store)."""
    tok = get_tokenizer(tokenizer)
    ids = needed_blocks(state)
    blocks = source.get_many(ns, ids)
    counts = source.token_counts(ns, ids, tok)
    return pack(PackInput(state=state, blocks=blocks, block_tokens=counts, turn=turn, attempt=attempt, budget=budget), tok)


def trace_event(
    ns: str, packed: Packed, *, turn: int, attempt: int, profile: str, budget: int, tokenizer: str,
    candidates: tuple[CandidateTrace, ...] = (), retriever_errors: tuple[str, ...] = (),
) -> PromptPacked:
    """The trace of a packed prompt: what went in, what stayed out and why, and the hash of its bytes."""
    return PromptPacked(
        ns=ns, turn=turn, attempt=attempt, profile=profile, budget=budget, tokenizer=tokenizer,
        prompt_tokens=packed.tokens, prompt_sha256=packed.sha256, sections=packed.sections,
        left_out=packed.left_out, candidates=candidates, retriever_errors=retriever_errors,
    )
