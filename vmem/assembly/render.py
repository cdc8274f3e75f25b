"""How a block appears to a model: as prompt text, or as a role-tagged chat message.

A rendered block is a function of the block alone, so its token count can be
cached by block id (and tokenizer).
"""

from __future__ import annotations

import msgspec

from vmem.schemas.events import BlockWritten
from vmem.schemas.messages import ChatMessage, ToolCall

SHORT_ID = 12


def short_id(block_id: str) -> str:
    """How a prompt shows a block id: its first 12 hex digits (48 bits), like a short git hash."""
    return block_id[:SHORT_ID]


def render_block(b: BlockWritten) -> str:
    """How a block appears in a prompt."""
    attrs = dict(b.attrs)
    if b.kind == "page":
        where = attrs.get("heading") or attrs.get("source", "")
        page = attrs.get("page")
        label = f"{where} · page {page}" if page is not None else where
        return f"[{short_id(b.block_id)}] {label}".rstrip() + f"\n{b.text}"
    if b.kind == "summary":
        return f"[{short_id(b.block_id)}] summary: {b.text}"
    if b.kind == "tool_call":
        name, arguments = _call_parts(b)
        return f"assistant called {name}({arguments}) [call {attrs.get('call_id', '')}]"
    if b.kind == "tool_result":
        return f"tool result [call {attrs.get('call_id', '')}]: {b.text}"
    if b.kind == "message":
        when = attrs.get("when")
        return f"{b.role}{' (' + when + ')' if when else ''}: {b.text}"
    return f"[{short_id(b.block_id)}] {b.text}" if b.kind == "fact" else b.text


def render_passage(b: BlockWritten, start: int, end: int) -> str:
    """How a passage of a page appears: its header marked as an excerpt, the span, and where it was cut.

    Offsets outside the text are clipped (a log from elsewhere may hold any).
    """
    start = max(0, min(start, len(b.text)))
    end = max(start, min(end, len(b.text)))
    head, _sep, _body = render_block(msgspec.structs.replace(b, text="")).partition("\n")
    text = b.text[start:end].strip()
    return f"{head}, excerpt\n{'… ' if start > 0 else ''}{text}{' …' if end < len(b.text) else ''}"


def searchable_text(b: BlockWritten) -> str:
    """What retrieval indexes of a block: what the model reads of it, but the block id no question names.

    A page's heading (or source) is part of it, so a question that names a
    document's section finds its pages; a message's speaker and date too.
    """
    if b.kind == "page":
        attrs = dict(b.attrs)
        where = attrs.get("heading") or attrs.get("source", "")
        return f"{where}\n{b.text}" if where else b.text
    if b.kind in ("message", "tool_call", "tool_result"):
        return render_block(b)
    return b.text


class _StoredCall(msgspec.Struct):
    name: str
    arguments: str


def _call_parts(b: BlockWritten) -> tuple[str, str]:
    """(name, arguments) of a tool_call block; a block written by other code may hold plain text."""
    try:
        call = msgspec.json.decode(b.text, type=_StoredCall)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "unknown", b.text
    return call.name, call.arguments


def chat_message(b: BlockWritten, text: str) -> ChatMessage:
    """A conversation block as a role-tagged chat message."""
    attrs = dict(b.attrs)
    if b.kind == "tool_call":
        name, arguments = _call_parts(b)
        return ChatMessage(role="assistant", content="",
                           tool_calls=(ToolCall(id=attrs.get("call_id", ""), name=name, arguments=arguments),))
    if b.kind == "tool_result":
        return ChatMessage(role="tool", content=b.text, tool_call_id=attrs.get("call_id", ""))
    if b.kind == "summary":
        return ChatMessage(role="user", content=f"[summary of the earlier conversation] {b.text}")
    if b.role in ("user", "assistant"):
        return ChatMessage(role=b.role, content=b.text)
    return ChatMessage(role="user", content=text)
