"""A fake Anthropic Messages API server for tests: it checks requests as the real API does.

It rejects what the real API rejects (400 ``invalid_request_error``): a first
turn that is not the user's, two turns of one role in a row, empty text
blocks, a tool_result that answers no tool_use or comes after text, an
unanswered tool_use, more than four cache breakpoints.  It calls the first
offered tool when the user speaks, reports a tool result back as text,
otherwise echoes (in two text blocks), and reports its prompt cache like
Anthropic: written the first time a prefix is seen, read after.
"""

from __future__ import annotations

import json
from typing import Any

from fakehttp import FakeProvider, Seen

KEY = "sk-ant-test-123"
EPHEMERAL = {"type": "ephemeral"}
CACHED = 1000  # tokens of a cached prefix, as the fake reports them


def text(value: str, cached: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": value}
    if cached:
        block["cache_control"] = EPHEMERAL
    return block


def _check_block(where: str, block: dict[str, Any], allowed: set[str]) -> list[str]:
    kind = block.get("type")
    keys = set(block) - {"cache_control"}
    if kind not in allowed:
        return [f"{where}: block type {kind!r} not allowed here"]
    if block.get("cache_control", EPHEMERAL) != EPHEMERAL:
        return [f"{where}: bad cache_control"]
    if kind == "text" and (keys != {"type", "text"} or not isinstance(block["text"], str) or not block["text"]):
        return [f"{where}: text content blocks must be non-empty strings"]
    if kind == "tool_use" and (keys != {"type", "id", "name", "input"} or not isinstance(block["input"], dict)):
        return [f"{where}: bad tool_use {block}"]
    if kind == "tool_result" and keys != {"type", "tool_use_id", "content"}:
        return [f"{where}: bad tool_result {block}"]
    return []


def check_request(seen: Seen) -> list[str]:
    """What the real Messages API would object to."""
    problems: list[str] = []
    if seen.method != "POST" or seen.path != "/v1/messages":
        problems.append(f"unexpected {seen.method} {seen.path}")
    expected = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    for name, value in expected.items():
        if seen.headers.get(name) != value:
            problems.append(f"header {name} is {seen.headers.get(name)!r}")
    if "authorization" in seen.headers:
        problems.append("Anthropic takes x-api-key, not Authorization")
    body = seen.body
    if not isinstance(body, dict):
        return problems + ["body is not a JSON object"]
    if set(body) - {"model", "max_tokens", "temperature", "system", "messages", "tools"} or not {
        "model",
        "max_tokens",
        "messages",
    } <= set(body):
        problems.append(f"body keys are {sorted(body)}")
    if not isinstance(body.get("max_tokens"), int) or not isinstance(body.get("temperature", 0), (int, float)):
        problems.append("max_tokens/temperature have wrong types")
    breakpoints = 0
    for i, block in enumerate(body.get("system", [])):
        problems += _check_block(f"system.{i}", block, {"text"})
        breakpoints += "cache_control" in block
    for tool in body.get("tools", []):
        if set(tool) != {"name", "description", "input_schema"} or tool["input_schema"].get("type") != "object":
            problems.append(f"bad tool {tool}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["messages: at least one message is required"]
    if messages[0].get("role") != "user":
        problems.append("messages: first message must use the user role")
    asked: set[str] = set()
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if set(m) != {"role", "content"} or not isinstance(content, list) or not content:
            problems.append(f"messages.{i}: needs a role and a non-empty list of content blocks")
            continue
        if i and messages[i - 1].get("role") == role:
            problems.append(f"messages.{i}: roles must alternate between user and assistant")
        allowed = {"text", "tool_use"} if role == "assistant" else {"text", "tool_result"}
        for j, block in enumerate(content):
            problems += _check_block(f"messages.{i}.content.{j}", block, allowed)
            breakpoints += "cache_control" in block
        if role == "user":
            kinds = [b.get("type") for b in content]
            if "tool_result" in kinds[kinds.index("text") if "text" in kinds else len(kinds) :]:
                problems.append(f"messages.{i}: tool_result blocks must come first")
            answered = {b.get("tool_use_id") for b in content if b.get("type") == "tool_result"}
            if answered - asked:
                problems.append(f"messages.{i}: unexpected tool_use_id {sorted(answered - asked)}")
            if asked - answered:
                problems.append(f"messages.{i}: tool_use ids {sorted(asked - answered)} without tool_result blocks")
            asked = set()
        else:
            asked = {b["id"] for b in content if b.get("type") == "tool_use"}
    if breakpoints > 4:
        problems.append(f"a maximum of 4 blocks with cache_control may be provided; found {breakpoints}")
    return problems


class FakeAnthropic(FakeProvider):
    """Anthropic's Messages API, as far as the adapter uses it, with its prompt cache."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: set[str] = set()
        self.base_url = self.origin

    def headers(self, seen: Seen) -> dict[str, str]:
        return {"request-id": f"req_{len(self.seen)}"}

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        problems = check_request(seen)
        if problems:
            return 400, error("invalid_request_error", "; ".join(problems))
        body = seen.body
        last = body["messages"][-1]
        results = [b for b in last["content"] if b["type"] == "tool_result"]
        if last["role"] == "user" and results:
            content, stop = [text(f"Result: {results[-1]['content']}")], "end_turn"
        elif body.get("tools") and last["role"] == "user":
            call = {"type": "tool_use", "id": "toolu_01", "name": body["tools"][0]["name"]}
            content = [text("Let me check."), call | {"input": {"unit": "C", "city": "Paris"}}]
            stop = "tool_use"
        else:
            said = "".join(b.get("text", "") for b in last["content"])
            content, stop = [text("echo: "), text(said)], "end_turn"
        usage = {"input_tokens": 7 * len(body["messages"]), "output_tokens": 5}
        usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        cached = [b for b in body.get("system", []) if "cache_control" in b]
        if cached:
            prefix = json.dumps(body["system"])
            usage["cache_read_input_tokens" if prefix in self.cache else "cache_creation_input_tokens"] = CACHED
            self.cache.add(prefix)
        return 200, {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": body["model"] + "-20250929",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }


def error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
