"""A :class:`~vmem.models.model.Model` over Anthropic's Messages API.

``POST {base_url}/v1/messages`` with ``x-api-key``, ``anthropic-version`` and
``content-type: application/json``.  Wire mapping:

* request: ``{"model", "max_tokens", "temperature", "system", "messages"}``,
  plus ``"tools": [{"name", "description", "input_schema"}]`` only when tools
  are given (``system`` only when there are system messages);
* system messages, in order, become the top-level ``system`` list of
  ``{"type": "text", "text"}`` blocks; the block of a message with
  ``cache_boundary`` gets ``"cache_control": {"type": "ephemeral"}``, so the
  stable prefix (tools, then system) is written to and read from Anthropic's
  prompt cache.  (Anthropic caches a prefix only from 1024 tokens, 2048 for
  Haiku models; shorter ones are sent uncached, at no extra cost.)
* the other messages become alternating user/assistant turns; consecutive
  messages of one role (a tool result counts as user) are merged into one turn
  with several content blocks, because the API rejects two turns of one role
  in a row;
* text: ``{"type": "text", "text"}`` (empty texts are left out: the API
  rejects empty text blocks); an assistant tool call: ``{"type": "tool_use",
  "id", "name", "input"}`` with ``input`` the stored arguments parsed (they
  must be a JSON object, or :class:`~vmem.errors.ModelError` names the call);
  a tool result: ``{"type": "tool_result", "tool_use_id", "content"}`` in a
  user turn, placed before any text of that turn (the API wants the results
  first);
* a user, assistant or tool message with ``cache_boundary`` puts
  ``cache_control`` on the last block it produced (for a user message, its
  text).  The API allows four cache breakpoints; beyond that the last four are
  kept, since a later breakpoint covers the earlier prefix anyway;
* the API requires the first turn to be the user's; if the first non-system
  message is an assistant's (a transcript that opens with the agent speaking),
  a one-line user turn, :data:`OPENING`, is put before it.

A final assistant turn is, for Anthropic, a prefill: the reply continues it.

Reply: the ``text`` blocks of ``content`` concatenated; each ``tool_use``
block a :class:`~vmem.schemas.messages.ToolCall` whose ``arguments`` are
``json.dumps(input, sort_keys=True, separators=(",", ":"))``, so the same call
always gives the same text; other block types (thinking, server tools) are
skipped.  ``input_tokens`` is ``usage.input_tokens`` plus
``cache_read_input_tokens`` plus ``cache_creation_input_tokens``: every prompt
token, cached or not, as the OpenAI adapter reports it (Anthropic's
``input_tokens`` alone counts only the uncached tail).  ``output_tokens`` and
``stop_reason`` as sent.  ``prompt`` is ignored: the messages carry it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import msgspec

from vmem.errors import ModelError, UsageError
from vmem.models.http_retry import (
    AdapterBase,
    JSONPoster,
    Sleeper,
    decode_reply,
    malformed,
)
from vmem.models.model import ModelReply, ToolSpec
from vmem.schemas.messages import ChatMessage, ToolCall

__all__ = ["OPENING", "AnthropicModel"]

_PROVIDER = "anthropic"
OPENING = "(The conversation so far follows.)"
MAX_CACHE_BREAKPOINTS = 4


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _Response(msgspec.Struct):
    content: list[_Block]
    usage: _Usage
    stop_reason: str | None = None
    model: str = ""


_decoder = msgspec.json.Decoder(_Response)
_encoder = msgspec.json.Encoder()


def _tool_input(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        shown = call.arguments if len(call.arguments) <= 80 else call.arguments[:80] + "…"
        raise ModelError(
            f"tool call {call.id!r} ({call.name}) has arguments that are not a JSON object: {shown!r}; "
            f"Anthropic needs an object as tool_use input, so fix or drop this call before sending it"
        )
    return value


def wire_messages(messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns) for `messages` (see the module docstring)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.tool_calls and m.role != "assistant":
            raise UsageError(f"message {i} ({m.role}) has tool_calls; only assistant messages may carry them")
        blocks: list[dict[str, Any]] = []
        if m.role in ("system", "user", "assistant"):
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for call in m.tool_calls:
                blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call)})
        elif m.role == "tool":
            if not m.tool_call_id:
                raise UsageError(f"message {i} is a tool result without tool_call_id; set it to the call's id")
            blocks.append({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content})
        else:
            raise UsageError(f"message {i} has role {m.role!r}; use system, user, assistant or tool")
        if not blocks:
            continue
        if m.cache_boundary:
            blocks[-1]["cache_control"] = _ephemeral()
        if m.role == "system":
            system.extend(blocks)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise UsageError(
            "Anthropic needs at least one user or assistant message besides the system ones; "
            "add the question as a user message"
        )
    for turn in turns:
        if turn["role"] == "user":  # tool results first; otherwise the order is kept
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": OPENING}]})
    marked = [b for b in system if "cache_control" in b]
    marked += [b for t in turns for b in t["content"] if "cache_control" in b]
    for block in marked[:-MAX_CACHE_BREAKPOINTS]:
        del block["cache_control"]
    return system, turns


class AnthropicModel(AdapterBase):
    """A Claude model behind the Anthropic Messages API.

    Retries and errors are described in :mod:`vmem.models.http_retry`; an error
    names Anthropic's ``error.type`` and ``error.message`` (for example
    ``overloaded_error`` with HTTP 529).  Use ``async with`` or call
    :meth:`aclose` to close the connection pool.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str = "https://api.anthropic.com",
        max_tokens: int = 1024,
        temperature: float = 0.0,
        timeout: float = 60.0,
        max_retries: int = 4,
        sleep: Sleeper = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        anthropic_version: str = "2023-06-01",
    ) -> None:
        if not model:
            raise UsageError("the Anthropic model name must not be empty (e.g. claude-sonnet-4-5)")
        if not api_key:
            raise UsageError("an Anthropic API key is required; set ANTHROPIC_API_KEY or pass api_key=")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.name = f"anthropic/{model}"
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self._http = JSONPoster(
            provider=_PROVIDER,
            url=base_url.rstrip("/") + "/v1/messages",
            headers={
                "x-api-key": api_key,
                "anthropic-version": anthropic_version,
                "content-type": "application/json",
                "accept": "application/json",
            },
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AnthropicModel(url={self._http.url!r}, model={self.model!r})"  # never the key

    def request_body(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> bytes:
        """The exact JSON sent for these messages and tools."""
        system, turns = wire_messages(messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if system:
            body["system"] = system
        body["messages"] = turns
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
        return _encoder.encode(body)

    async def complete(
        self, prompt: str, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> ModelReply:
        body = self.request_body(messages, tools)  # before any I/O: bad input fails without a request
        response = await self._http.post(body)
        decoded = decode_reply(_decoder, response, _PROVIDER, self._http.url)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for i, block in enumerate(decoded.content):
            if block.type == "text":
                if block.text is None:
                    raise malformed(_PROVIDER, self._http.url, response, f"content[{i}] (text) has no `text`")
                texts.append(block.text)
            elif block.type == "tool_use":
                if not (isinstance(block.id, str) and isinstance(block.name, str) and isinstance(block.input, dict)):
                    missing = [f for f in ("id", "name") if not isinstance(getattr(block, f), str)]
                    missing += [] if isinstance(block.input, dict) else ["input (an object)"]
                    raise malformed(
                        _PROVIDER, self._http.url, response, f"content[{i}] (tool_use) lacks {', '.join(missing)}"
                    )
                arguments = json.dumps(block.input, sort_keys=True, separators=(",", ":"))
                calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        usage = decoded.usage
        return ModelReply(
            text="".join(texts),
            tool_calls=tuple(calls),
            input_tokens=usage.input_tokens
            + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0),
            output_tokens=usage.output_tokens,
            stop_reason=decoded.stop_reason or "",
            model=decoded.model or self.model,
        )
