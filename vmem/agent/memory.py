"""Applying validated memory calls to a namespace's state: events and a result text.

Pure: the state and the call in, the events and what the model is told out.
Searches are done by the caller (they read indexes) and passed in as results.
"""

from __future__ import annotations

from typing import Sequence

import msgspec

from vmem.agent.functions import (
    PAGE_SIZE,
    ArchivalMemoryInsert,
    Call,
    CoreMemoryAppend,
    CoreMemoryReplace,
)
from vmem.schemas.events import BlockWritten, EdgeAdded, Event, SlotEdited
from vmem.state.blocks import make_block
from vmem.state.fold import State


class Applied(msgspec.Struct, frozen=True):
    events: list[Event]
    result: str
    error: str = ""  # non-empty: the call was refused, and why


def _refuse(message: str) -> Applied:
    return Applied([], f"error: {message}", message)


def _slot_edit(state: State, ns: str, label: str, value: str, op: str, turn: int, call_id: str) -> Applied:
    slot = state.slots.get(label)
    if slot is None:
        labels = ", ".join(state.slot_order) or "none defined"
        return _refuse(f"no working-context slot {label!r} (slots: {labels})")
    version, limit = slot.version, slot.limit
    if slot.readonly:
        return _refuse(f"slot {label!r} is read-only (pinned by the operator); model output cannot change it")
    if len(value) > limit:
        return _refuse(f"slot {label!r} would hold {len(value)} characters, over its limit of {limit}; "
                       f"replace or shorten what is there first")
    ev = SlotEdited(ns=ns, label=label, version=version + 1, value=value, op=op, turn=turn, call_id=call_id)  # type: ignore[arg-type]
    return Applied([ev], f"ok: {label} is now version {version + 1}, {len(value)}/{limit} characters")


def apply_memory_call(state: State, ns: str, call: Call, *, turn: int) -> Applied:
    """Events for a working-context edit or an archival insert (other calls: the caller's)."""
    a = call.args
    cid = call.call.id
    if isinstance(a, CoreMemoryAppend):
        old = state.slots[a.label].value if a.label in state.slots else ""
        return _slot_edit(state, ns, a.label, f"{old}\n{a.content}" if old else a.content, "append", turn, cid)
    if isinstance(a, CoreMemoryReplace):
        slot = state.slots.get(a.label)
        if slot is not None and a.old_content not in slot.value:
            return _refuse(f"{a.old_content!r} does not occur in slot {a.label!r}; quote its text exactly")
        old = slot.value if slot is not None else ""
        return _slot_edit(state, ns, a.label, old.replace(a.old_content, a.new_content, 1), "replace", turn, cid)
    if isinstance(a, ArchivalMemoryInsert):
        if not a.content.strip():
            return _refuse("archival_memory_insert needs some content")
        fact = make_block(ns, "fact", "archival", a.content.strip(), {"turn": str(turn), "call_id": cid})
        return Applied([fact], f"ok: stored in archival memory as {fact.block_id}")
    raise TypeError(f"not a memory edit: {type(a).__name__}")


def format_hits(hits: Sequence[BlockWritten], page: int, total: int) -> str:
    """Search results as the model sees them, one per line, with paging."""
    if not hits:
        return f"no results (page {page})" if page else "no results"
    lines = []
    for b in hits:
        attrs = dict(b.attrs)
        when = f"[{attrs['when']}] " if attrs.get("when") else ""
        lines.append(f"{when}{b.role}: {b.text}")
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    return f"page {page + 1} of {pages} ({total} results)\n" + "\n".join(lines)


def tool_pair(ns: str, call_id: str, name: str, arguments: str, result: str, turn: int) -> list[Event]:
    """A tool call and its result as blocks, joined by a `result_of` edge."""
    call = tool_call_block(ns, call_id, name, arguments, turn)
    return [call, *tool_result(ns, call_id, call.block_id, result, turn)]


def tool_call_block(ns: str, call_id: str, name: str, arguments: str, turn: int) -> BlockWritten:
    return make_block(ns, "tool_call", "assistant", msgspec.json.encode({"name": name, "arguments": arguments}).decode(),
                      {"call_id": call_id, "turn": str(turn)})


def tool_result(ns: str, call_id: str, call_block: str, result: str, turn: int) -> list[Event]:
    res = make_block(ns, "tool_result", "tool", result, {"call_id": call_id, "turn": str(turn)})
    return [res, EdgeAdded(ns=ns, src=res.block_id, dst=call_block, kind="result_of")]
