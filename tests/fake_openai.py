"""A fake OpenAI chat-completions server for tests: it checks requests as the real API does.

It rejects a request the real API would reject (400 ``invalid_request_error``
saying why), calls the first offered tool when the last message is the
user's, reports a tool result back as text, and otherwise echoes.
"""

from __future__ import annotations

from typing import Any

from fakehttp import FakeProvider, Seen, bearer_json_post_problems

KEY = "sk-test-123"
# As the model wrote it, spacing and key order included: kept verbatim.
RAW_ARGUMENTS = '{"city": "Paris", "unit": "C"}'


def check_request(seen: Seen, key: str | None) -> list[str]:
    """What the real chat-completions API would object to."""
    problems = bearer_json_post_problems(seen, "/v1/chat/completions", key)
    body = seen.body
    if not isinstance(body, dict):
        return problems + ["body is not a JSON object"]
    allowed = {"model", "messages", "max_tokens", "temperature", "tools", "tool_choice"}
    if set(body) - allowed or not {"model", "messages", "max_tokens", "temperature"} <= set(body):
        problems.append(f"body keys are {sorted(body)}")
    if not isinstance(body.get("max_tokens"), int) or not isinstance(body.get("temperature"), (int, float)):
        problems.append("max_tokens/temperature have wrong types")
    if ("tools" in body) != ("tool_choice" in body) or body.get("tool_choice", "auto") != "auto":
        problems.append("tools and tool_choice='auto' go together")
    for tool in body.get("tools", []):
        fn = tool.get("function", {})
        if set(tool) != {"type", "function"} or tool["type"] != "function" or set(fn) != {"name", "description", "parameters"}:
            problems.append(f"bad tool {tool}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["messages must be a non-empty list"]
    pending: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if pending and role != "tool":
            problems.append(f"messages[{i}]: tool calls {sorted(pending)} were not answered")
            pending = set()
        if role in ("system", "user") or (role == "assistant" and "tool_calls" not in m):
            if set(m) != {"role", "content"} or not isinstance(m["content"], str):
                problems.append(f"messages[{i}]: bad {role} message {m}")
        elif role == "assistant":
            if set(m) != {"role", "content", "tool_calls"} or not (m["content"] is None or isinstance(m["content"], str)):
                problems.append(f"messages[{i}]: bad assistant message {m}")
            for call in m["tool_calls"]:
                fn = call.get("function", {})
                if set(call) != {"id", "type", "function"} or call["type"] != "function" or set(fn) != {"name", "arguments"}:
                    problems.append(f"messages[{i}]: bad tool call {call}")
                elif not isinstance(fn["arguments"], str):
                    problems.append(f"messages[{i}]: arguments must be a string")
                else:
                    pending.add(call["id"])
        elif role == "tool":
            if set(m) != {"role", "tool_call_id", "content"}:
                problems.append(f"messages[{i}]: bad tool message {m}")
            elif m["tool_call_id"] not in pending:
                problems.append(
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no call {m['tool_call_id']!r})"
                )
            pending.discard(m.get("tool_call_id"))
        else:
            problems.append(f"messages[{i}]: unknown role {role!r}")
    return problems


def answer(seen: Seen, key: str | None) -> tuple[int, dict[str, Any]]:
    problems = check_request(seen, key)
    if problems:
        return 400, {
            "error": {"message": "; ".join(problems), "type": "invalid_request_error", "param": None, "code": None}
        }
    body = seen.body
    last = body["messages"][-1]
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if last["role"] == "tool":
        message["content"], finish = f"Result: {last['content']}", "stop"
    elif body.get("tools") and last["role"] == "user":
        name = body["tools"][0]["function"]["name"]
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": RAW_ARGUMENTS}}
        ]
        finish = "tool_calls"
    else:
        message["content"], finish = f"echo: {last['content']}", "stop"
    prompt_tokens = 11 * len(body["messages"])
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body["model"] + "-2024-07-18",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5},
        "system_fingerprint": "fp_test",
    }


class FakeOpenAI(FakeProvider):
    """OpenAI's chat completions, as far as the adapter uses them."""

    def __init__(self, key: str | None = KEY) -> None:
        super().__init__()
        self.key = key
        self.base_url = self.origin + "/v1"

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        return answer(seen, self.key)
