"""What vmem needs of a model: a prompt (and role-tagged messages, and tools) in, a reply out.

Adapters translate these neutral shapes to a provider's wire format and back:
OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, Ollama)
and Anthropic Messages.  The model is a stateless function; what it says is
untrusted and goes through the reducer.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import msgspec

from vmem.schemas.messages import ChatMessage, ToolCall


class ToolSpec(msgspec.Struct, frozen=True):
    """A function the model may call: name, description, JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    """A model's reply: text and/or tool calls (arguments as the raw JSON text it produced)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str = ""
    model: str = ""


class Model(Protocol):
    """A stateless function from a packed prompt to a reply (``tests/conformance/model_suite.py`` checks one)."""

    name: str

    async def complete(
        self, prompt: str, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> ModelReply:
        """The reply to `messages` (`prompt` holds the same text, untagged); it may call `tools`.

        A provider's failure is a :class:`~vmem.errors.ModelError`.
        """
        ...

    async def aclose(self) -> None:
        """Release what the model holds (connections); idempotent, and a later call reopens it."""
        ...
