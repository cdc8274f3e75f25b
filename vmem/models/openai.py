"""A :class:`~vmem.models.model.Model` over OpenAI-compatible chat completions.

``POST {base_url}/chat/completions`` as OpenAI, vLLM, the llama.cpp server
and Ollama (``http://localhost:11434/v1``) accept it.  Wire mapping:

* request: ``{"model", "messages", "max_tokens", "temperature"}``, plus
  ``"tools": [{"type": "function", "function": {"name", "description",
  "parameters"}}]`` and ``"tool_choice": "auto"`` only when tools are given;
* system, user and assistant messages: ``{"role", "content"}``;
* an assistant message with tool calls: ``{"role": "assistant", "content":
  <text, or null when empty>, "tool_calls": [{"id", "type": "function",
  "function": {"name", "arguments"}}]}`` with ``arguments`` the raw JSON text;
* a tool result: ``{"role": "tool", "tool_call_id", "content"}``;
* consecutive messages of one role are sent as they are (OpenAI accepts them).

``cache_boundary`` needs nothing here: OpenAI caches prompt prefixes
automatically (vLLM and llama.cpp have their own prefix caches), and a prefix
is reused only if it is byte-identical.  The packer keeps it so (the stable
sections come first, in one system message, unchanged from turn to turn) and
this adapter encodes the request deterministically (fixed key order, messages
in the order given), so the cached prefix survives turns.

Reply: ``choices[0].message.content`` (null is "") and ``.tool_calls`` (the
``arguments`` string kept verbatim; a server that sends an object instead gets
it encoded as compact, sorted JSON), ``choices[0].finish_reason`` as
``stop_reason``, ``usage.prompt_tokens``/``completion_tokens`` (0 when a
server omits ``usage``).

``max_tokens`` is the field every compatible server reads; OpenAI's reasoning
models want ``max_completion_tokens`` and reject ``temperature``, so use them
through a server or proxy that maps those.  ``prompt`` is ignored: the
messages carry the same text, role-tagged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import msgspec

from vmem.errors import UsageError
from vmem.models.http_retry import (
    AdapterBase,
    JSONPoster,
    Sleeper,
    decode_reply,
    malformed,
)
from vmem.models.model import ModelReply, ToolSpec
from vmem.schemas.messages import ChatMessage, ToolCall

__all__ = ["OpenAIChatModel"]

_PROVIDER = "openai"


class _Function(msgspec.Struct):
    name: str
    arguments: str | dict[str, Any]


class _ToolCall(msgspec.Struct):
    id: str
    function: _Function


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Response(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None
    model: str = ""


_decoder = msgspec.json.Decoder(_Response)
_encoder = msgspec.json.Encoder()


def wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """`messages` in chat-completions form (see the module docstring)."""
    if not messages:
        raise UsageError("a chat completion needs at least one message; pass the packed prompt's messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "user") or (m.role == "assistant" and not m.tool_calls):
            if m.tool_calls:
                raise UsageError(f"message {i} ({m.role}) has tool_calls; only assistant messages may carry them")
            out.append({"role": m.role, "content": m.content})
        elif m.role == "assistant":
            calls = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": calls})
        elif m.role == "tool":
            if not m.tool_call_id:
                raise UsageError(f"message {i} is a tool result without tool_call_id; set it to the call's id")
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        else:
            raise UsageError(f"message {i} has role {m.role!r}; use system, user, assistant or tool")
    return out


def wire_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


class OpenAIChatModel(AdapterBase):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    `base_url` includes the version prefix (``https://api.openai.com/v1``,
    ``http://localhost:8000/v1``).  ``Authorization: Bearer <api_key>`` is sent
    when `api_key` is given (local servers usually need none).  Retries and
    errors are described in :mod:`vmem.models.http_retry`.  Use ``async with`` or
    call :meth:`aclose` to close the connection pool.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        timeout: float = 60.0,
        max_retries: int = 4,
        sleep: Sleeper = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not model:
            raise UsageError("the OpenAI-compatible model name must not be empty (e.g. gpt-4o-mini)")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.name = f"openai/{model}"
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = float(temperature)
        self._http = JSONPoster(
            provider=_PROVIDER,
            url=base_url.rstrip("/") + "/chat/completions",
            headers=headers,
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIChatModel(url={self._http.url!r}, model={self.model!r})"  # never the key

    def request_body(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> bytes:
        """The exact JSON sent for these messages and tools."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire_messages(messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if tools:
            body["tools"] = wire_tools(tools)
            body["tool_choice"] = "auto"
        return _encoder.encode(body)

    async def complete(
        self, prompt: str, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> ModelReply:
        response = await self._http.post(self.request_body(messages, tools))
        decoded = decode_reply(_decoder, response, _PROVIDER, self._http.url)
        if not decoded.choices:
            raise malformed(_PROVIDER, self._http.url, response, "`choices` is empty")
        choice = decoded.choices[0]
        calls = tuple(
            ToolCall(
                id=c.id,
                name=c.function.name,
                arguments=c.function.arguments
                if isinstance(c.function.arguments, str)
                else json.dumps(c.function.arguments, sort_keys=True, separators=(",", ":")),
            )
            for c in choice.message.tool_calls or ()
        )
        usage = decoded.usage or _Usage()
        return ModelReply(
            text=choice.message.content or "",
            tool_calls=calls,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            stop_reason=choice.finish_reason or "",
            model=decoded.model or self.model,
        )
