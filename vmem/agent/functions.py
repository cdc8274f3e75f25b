"""The memory functions a model may call, with the names MemGPT users know.

Each function has a JSON Schema (what the adapters pass to the model as a
tool) and a msgspec Struct that validates the arguments the model sent.
Model output is untrusted: unknown names, malformed JSON, wrong types, extra
fields and calls the namespace does not allow all become a `CallError` that
the model is shown next step; nothing about them changes state.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import msgspec

from vmem.models.model import ToolSpec
from vmem.schemas.messages import ToolCall

PAGE_SIZE = 5


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    request_heartbeat: bool = False


class SendMessage(_Args):
    message: str


class CoreMemoryAppend(_Args):
    label: str
    content: str


class CoreMemoryReplace(_Args):
    label: str
    old_content: str
    new_content: str


class ConversationSearch(_Args):
    query: str
    page: int = 0


class ConversationSearchDate(_Args):
    start_date: str
    end_date: str
    page: int = 0


class ArchivalMemoryInsert(_Args):
    content: str


class ArchivalMemorySearch(_Args):
    query: str
    page: int = 0


class PageFault(_Args):
    query: str = ""
    block_ids: list[str] = []


_HEARTBEAT = {"type": "boolean", "description": "Ask for another step after this call (to act on its result)."}
_PAGE = {"type": "integer", "minimum": 0, "description": "Result page, from 0.", "default": 0}


def _schema(props: Mapping[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**props, "request_heartbeat": _HEARTBEAT},
        "required": list(required),
        "additionalProperties": False,
    }


FUNCTIONS: dict[str, tuple[type[_Args], ToolSpec]] = {
    "send_message": (SendMessage, ToolSpec(
        "send_message", "Send a message to the user.",
        _schema({"message": {"type": "string", "description": "The message text."}}, ["message"]))),
    "core_memory_append": (CoreMemoryAppend, ToolSpec(
        "core_memory_append", "Append to a working-context slot (for example 'human' or 'persona').",
        _schema({"label": {"type": "string"}, "content": {"type": "string"}}, ["label", "content"]))),
    "core_memory_replace": (CoreMemoryReplace, ToolSpec(
        "core_memory_replace", "Replace text in a working-context slot; old_content must occur in it exactly.",
        _schema({"label": {"type": "string"}, "old_content": {"type": "string"}, "new_content": {"type": "string"}},
                ["label", "old_content", "new_content"]))),
    "conversation_search": (ConversationSearch, ToolSpec(
        "conversation_search", "Search every past message (recall storage) by text.",
        _schema({"query": {"type": "string"}, "page": _PAGE}, ["query"]))),
    "conversation_search_date": (ConversationSearchDate, ToolSpec(
        "conversation_search_date", "Search past messages by date range (YYYY-MM-DD, inclusive).",
        _schema({"start_date": {"type": "string"}, "end_date": {"type": "string"}, "page": _PAGE},
                ["start_date", "end_date"]))),
    "archival_memory_insert": (ArchivalMemoryInsert, ToolSpec(
        "archival_memory_insert", "Keep a fact or document in archival storage, searchable by meaning.",
        _schema({"content": {"type": "string"}}, ["content"]))),
    "archival_memory_search": (ArchivalMemorySearch, ToolSpec(
        "archival_memory_search", "Search archival storage by meaning.",
        _schema({"query": {"type": "string"}, "page": _PAGE}, ["query"]))),
    "page_fault": (PageFault, ToolSpec(
        "page_fault", "Page stored blocks into the prompt: by query, or by block id.",
        _schema({"query": {"type": "string"}, "block_ids": {"type": "array", "items": {"type": "string"}}}, []))),
}
MEMORY_FUNCTIONS = tuple(FUNCTIONS)


def tool_specs(extra: Sequence[ToolSpec] = ()) -> list[ToolSpec]:
    """The memory functions' tool specs, then the agent's own tools."""
    return [spec for _cls, spec in FUNCTIONS.values()] + list(extra)


class Call(msgspec.Struct, frozen=True):
    """A validated call: the raw call and its typed arguments."""

    call: ToolCall
    args: _Args


class CallError(msgspec.Struct, frozen=True):
    call: ToolCall
    code: str
    message: str


def validate_call(call: ToolCall, *, allowed: Sequence[str] = (), agent_tools: Mapping[str, ToolSpec] | None = None) -> Call | CallError | ToolCall:
    """A memory call (validated), an agent-tool call (returned as is), or an error.

    `allowed` limits the memory functions this namespace may call (empty: all).
    """
    agent_tools = agent_tools or {}
    entry = FUNCTIONS.get(call.name)
    if entry is None:
        if call.name in agent_tools:
            try:
                args = msgspec.json.decode(call.arguments or "{}")
            except msgspec.DecodeError as exc:
                return CallError(call, "bad_json", f"{call.name}: arguments are not valid JSON ({exc})")
            if not isinstance(args, dict):
                return CallError(call, "bad_arguments", f"{call.name}: arguments must be a JSON object")
            return call
        known = ", ".join(sorted([*FUNCTIONS, *agent_tools]))
        return CallError(call, "unknown_function", f"no function named {call.name!r}; available: {known}")
    if allowed and call.name not in allowed:
        return CallError(call, "not_allowed", f"{call.name} is not allowed in this namespace")
    cls, _spec = entry
    try:
        args = msgspec.json.decode(call.arguments or "{}", type=cls)
    except msgspec.ValidationError as exc:
        return CallError(call, "bad_arguments", f"{call.name}: {exc}")
    except msgspec.DecodeError as exc:
        return CallError(call, "bad_json", f"{call.name}: arguments are not valid JSON ({exc})")
    if getattr(args, "page", 0) < 0:
        return CallError(call, "bad_arguments", f"{call.name}: page must be >= 0")
    return Call(call, args)
