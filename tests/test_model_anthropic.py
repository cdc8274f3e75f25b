"""AnthropicModel against a real HTTP server on 127.0.0.1 that checks the Messages API's rules.

The fake provider (tests/fake_anthropic.py) rejects what the real API
rejects and reports its prompt cache like Anthropic.  The shared Model
conformance suite runs against it too.  Every test runs under asyncio and
trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conformance.model_suite import ProviderModelConformance
from fake_anthropic import CACHED, EPHEMERAL, KEY, FakeAnthropic, error, text
from fakehttp import Reply, Sleeps, running

from vmem.errors import ModelError, UsageError
from vmem.models.anthropic import OPENING, AnthropicModel
from vmem.models.config import model_from_env
from vmem.models.http_retry import ModelHTTPError
from vmem.models.model import Model, ModelReply, ToolSpec
from vmem.schemas.messages import ChatMessage, ToolCall

pytestmark = pytest.mark.anyio

SYSTEM = ChatMessage(role="system", content="<Instructions>\nAnswer briefly.\n</Instructions>", cache_boundary=True)
QUESTION = ChatMessage(role="user", content="What is the weather in Paris?")
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"],
    },
)


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with running(FakeAnthropic()) as fake:
        yield fake


def make(server: FakeAnthropic, sleeps: Sleeps | None = None, **kwargs: Any) -> AnthropicModel:
    kwargs.setdefault("api_key", KEY)
    return AnthropicModel(
        "claude-test", base_url=server.base_url, sleep=sleeps if sleeps is not None else Sleeps(), **kwargs
    )


def scripted(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(body).encode(), headers or {})


@pytest.fixture
def provider(server: FakeAnthropic) -> FakeAnthropic:
    return server


@pytest.fixture
async def model(server: FakeAnthropic) -> AsyncIterator[AnthropicModel]:
    adapter = make(server, max_retries=2)
    try:
        yield adapter
    finally:
        await adapter.aclose()


class TestAnthropicModelConformance(ProviderModelConformance):
    """The shared Model suite against the fake Anthropic server, which rejects what the real API would."""


# -- shapes -------------------------------------------------------------------


async def test_plain_text_exact_request_and_reply_with_cache(server: FakeAnthropic) -> None:
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        typed: Model = model
        first = await typed.complete("the prompt is ignored", (SYSTEM, QUESTION))
        again = await typed.complete("", (SYSTEM, QUESTION))
    seen = server.seen[0]
    assert seen.method == "POST" and seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY and seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "model": "claude-test",
        "max_tokens": 1024,
        "temperature": 0.0,
        "system": [text(SYSTEM.content, cached=True)],
        "messages": [{"role": "user", "content": [text(QUESTION.content)]}],
    }
    assert server.seen[1].body == seen.body  # byte-for-byte the same prefix, so the cache is read
    # input_tokens counts every prompt token: uncached + cache written (first) or read (again).
    expected = ModelReply(
        text=f"echo: {QUESTION.content}",  # two text blocks, concatenated
        input_tokens=7 + CACHED,
        output_tokens=5,
        stop_reason="end_turn",
        model="claude-test-20250929",
    )
    assert first == expected and again == expected
    assert sleeps == [] and model.name == "anthropic/claude-test" and KEY not in repr(model)


async def test_system_lifted_and_same_role_turns_merged(server: FakeAnthropic) -> None:
    messages = (
        ChatMessage(role="system", content="A"),
        ChatMessage(role="user", content="u1"),
        ChatMessage(role="system", content="B", cache_boundary=True),
        ChatMessage(role="user", content="u2", cache_boundary=True),
        ChatMessage(role="user", content="u3"),
        ChatMessage(role="assistant", content="a1"),
        ChatMessage(role="assistant", content="a2"),
        ChatMessage(role="user", content=""),  # empty: left out, the API rejects empty text
        ChatMessage(role="user", content="u4"),
    )
    async with make(server, max_tokens=50, temperature=0.7) as model:
        reply = await model.complete("", messages)
    body = server.seen[0].body
    assert body["system"] == [text("A"), text("B", cached=True)]
    assert body["messages"] == [
        {"role": "user", "content": [text("u1"), text("u2", cached=True), text("u3")]},
        {"role": "assistant", "content": [text("a1"), text("a2")]},
        {"role": "user", "content": [text("u4")]},
    ]
    assert body["max_tokens"] == 50 and body["temperature"] == 0.7
    assert reply.text == "echo: u4"


async def test_assistant_first_gets_a_user_turn_before_it(server: FakeAnthropic) -> None:
    messages = (SYSTEM, ChatMessage(role="assistant", content="Hello, I can help."), QUESTION)
    async with make(server) as model:
        await model.complete("", messages)
    assert server.seen[0].body["messages"] == [
        {"role": "user", "content": [text(OPENING)]},
        {"role": "assistant", "content": [text("Hello, I can help.")]},
        {"role": "user", "content": [text(QUESTION.content)]},
    ]
    assert "system" in server.seen[0].body


async def test_tool_use_round_trip(server: FakeAnthropic) -> None:
    async with make(server) as model:
        first = await model.complete("", (SYSTEM, QUESTION), tools=[WEATHER])
        assert first.text == "Let me check." and first.stop_reason == "tool_use"
        # The server sent {"unit": "C", "city": "Paris"}: sorted, compact, deterministic.
        assert first.tool_calls == (ToolCall(id="toolu_01", name="get_weather", arguments='{"city":"Paris","unit":"C"}'),)
        follow = (
            SYSTEM,
            QUESTION,
            ChatMessage(role="assistant", content=first.text, tool_calls=first.tool_calls),
            ChatMessage(role="user", content="Celsius, please."),  # text before the result ...
            ChatMessage(role="tool", content="21C", tool_call_id="toolu_01"),
        )
        second = await model.complete("", follow, tools=[WEATHER])
    one, two = (s.body for s in server.seen)
    assert one["tools"] == [{"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.parameters}]
    assert two["messages"] == [
        {"role": "user", "content": [text(QUESTION.content)]},
        {
            "role": "assistant",
            "content": [
                text("Let me check."),
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "unit": "C"}},
            ],
        },
        {
            "role": "user",  # ... merged into one user turn, the result first
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "21C"}, text("Celsius, please.")],
        },
    ]
    assert second.text == "Result: 21C" and second.tool_calls == () and second.stop_reason == "end_turn"


async def test_tool_calls_and_results_carry_cache_boundaries(server: FakeAnthropic) -> None:
    calls = (ToolCall(id="t1", name="get_weather", arguments='{"city":"Oslo"}'),)
    messages = (
        SYSTEM,
        QUESTION,
        ChatMessage(role="assistant", content="", tool_calls=calls, cache_boundary=True),
        ChatMessage(role="tool", content="3C", tool_call_id="t1", cache_boundary=True),
    )
    async with make(server) as model:
        await model.complete("", messages)
    body = server.seen[0].body
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}, "cache_control": EPHEMERAL}
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "3C", "cache_control": EPHEMERAL}
    ]


async def test_at_most_four_cache_breakpoints_the_last_ones_kept(server: FakeAnthropic) -> None:
    messages = tuple(ChatMessage(role="system", content=f"s{i}", cache_boundary=True) for i in range(3)) + tuple(
        ChatMessage(role="user", content=f"u{i}", cache_boundary=True) for i in range(3)
    )
    async with make(server) as model:
        await model.complete("", messages)
    body = server.seen[0].body
    assert body["system"] == [text("s0"), text("s1"), text("s2", cached=True)]
    assert body["messages"] == [{"role": "user", "content": [text(f"u{i}", cached=True) for i in range(3)]}]


@pytest.mark.parametrize("arguments", ["[1, 2]", "not json", "", '"text"'])
async def test_tool_arguments_that_are_not_an_object_name_the_call(server: FakeAnthropic, arguments: str) -> None:
    bad = (QUESTION, ChatMessage(role="assistant", content="", tool_calls=(ToolCall(id="t9", name="f", arguments=arguments),)))
    async with make(server) as model:
        with pytest.raises(ModelError, match=r"tool call 't9' \(f\) has arguments that are not a JSON object"):
            await model.complete("", bad)
    assert server.seen == []


async def test_unknown_blocks_skipped_and_missing_cache_counts_are_zero(server: FakeAnthropic) -> None:
    body = {
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, text("Fine.")],
        "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": None},
        "stop_reason": "max_tokens",
    }
    server.script.append(scripted(200, body))
    async with make(server) as model:
        reply = await model.complete("", (QUESTION,))
    assert reply == ModelReply(text="Fine.", input_tokens=3, output_tokens=4, stop_reason="max_tokens", model="claude-test")


# -- retries and errors -------------------------------------------------------


async def test_429_honours_retry_after_then_succeeds(server: FakeAnthropic) -> None:
    limited = error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")
    server.script.append(scripted(429, limited, {"retry-after": "2"}))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        reply = await model.complete("", (SYSTEM, QUESTION))
    assert sleeps == [2.0]
    assert len(server.seen) == 2 and server.seen[0].body == server.seen[1].body
    assert reply.text == f"echo: {QUESTION.content}"


async def test_500_then_success_backs_off(server: FakeAnthropic) -> None:
    server.script.append(scripted(500, error("api_error", "Internal server error")))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        reply = await model.complete("", (QUESTION,))
    assert sleeps == [0.5] and len(server.seen) == 2 and reply.stop_reason == "end_turn"


async def test_529_overloaded_exhausts_retries(server: FakeAnthropic) -> None:
    server.script.extend(scripted(529, error("overloaded_error", "Overloaded")) for _ in range(3))
    sleeps = Sleeps()
    async with make(server, sleeps, max_retries=2) as model:
        with pytest.raises(ModelHTTPError) as info:
            await model.complete("", (QUESTION,))
    err = info.value
    assert sleeps == [0.5, 1.0] and len(server.seen) == 3
    assert err.status == 529 and err.attempts == 3 and err.provider == "anthropic"
    assert "anthropic request" in str(err) and "after 3 attempts" in str(err)
    assert "HTTP 529 (overloaded_error: Overloaded)" in str(err) and "request id req_3" in str(err)


async def test_400_fails_at_once_with_the_providers_reason(server: FakeAnthropic) -> None:
    # A tool result answering no tool_use: the fake rejects it as Anthropic does.
    orphan = (QUESTION, ChatMessage(role="tool", content="12C", tool_call_id="toolu_x"))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelHTTPError) as info:
            await model.complete("", orphan)
    assert len(server.seen) == 1 and sleeps == []
    assert info.value.status == 400 and info.value.attempts == 1
    assert "HTTP 400 (invalid_request_error: " in str(info.value) and "toolu_x" in str(info.value)


async def test_401_fails_at_once(server: FakeAnthropic) -> None:
    server.script.append(scripted(401, error("authentication_error", "invalid x-api-key")))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelHTTPError, match=r"HTTP 401 \(authentication_error: invalid x-api-key\)"):
            await model.complete("", (QUESTION,))
    assert len(server.seen) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"upstream connect error", "malformed anthropic response.*upstream connect error"),
        (b'{"content": [], "stop_reason": "end_turn"}', "missing required field `usage`"),
        (b'{"usage": {"input_tokens": 1, "output_tokens": 1}}', "missing required field `content`"),
        (b'{"content": [], "usage": {"input_tokens": 1}}', r"missing required field `output_tokens` - at `\$.usage`"),
        (
            b'{"content": [{"type": "tool_use", "name": "f", "input": {}}], "usage": {"input_tokens": 1, "output_tokens": 1}}',
            r"content\[0\] \(tool_use\) lacks id",
        ),
        (
            b'{"content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}], '
            b'"usage": {"input_tokens": 1, "output_tokens": 1}}',
            r"lacks input \(an object\)",
        ),
        (
            b'{"content": [{"type": "text"}], "usage": {"input_tokens": 1, "output_tokens": 1}}',
            r"content\[0\] \(text\) has no `text`",
        ),
    ],
)
async def test_malformed_reply_is_a_model_error(server: FakeAnthropic, body: bytes, says: str) -> None:
    server.script.append(Reply(200, body))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelError, match=says):
            await model.complete("", (QUESTION,))
    assert len(server.seen) == 1 and sleeps == []


async def test_timeout_is_retried_then_fails(server: FakeAnthropic) -> None:
    server.script.extend([Reply(delay=30), Reply(delay=30)])
    sleeps = Sleeps()
    async with make(server, sleeps, timeout=0.2, max_retries=1) as model:
        with pytest.raises(ModelHTTPError, match="after 2 attempts; last: ReadTimeout") as info:
            await model.complete("", (QUESTION,))
    assert info.value.status is None and sleeps == [0.5] and len(server.seen) == 2


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ((SYSTEM,), "at least one user or assistant message"),
        ((ChatMessage(role="robot", content="x"),), "role 'robot'"),
        ((ChatMessage(role="tool", content="x"),), "without tool_call_id"),
    ],
)
async def test_bad_messages_are_usage_errors_before_any_request(
    server: FakeAnthropic, messages: tuple[ChatMessage, ...], says: str
) -> None:
    async with make(server) as model:
        with pytest.raises(UsageError, match=says):
            await model.complete("", messages)
    assert server.seen == []


# -- configuration ------------------------------------------------------------


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="API key is required"):
        AnthropicModel("claude-test", api_key="")
    with pytest.raises(UsageError, match="http"):
        AnthropicModel("claude-test", api_key="k", base_url="api.anthropic.com")
    with pytest.raises(UsageError, match="max_retries"):
        AnthropicModel("claude-test", api_key="k", max_retries=-2)


def test_model_from_env_needs_the_key_and_has_defaults() -> None:
    with pytest.raises(UsageError, match="set the ANTHROPIC_API_KEY environment variable"):
        model_from_env("anthropic", {"ANTHROPIC_BASE_URL": "http://localhost:1"})
    model = model_from_env("anthropic", {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": ""})
    assert isinstance(model, AnthropicModel)
    assert model.name == "anthropic/claude-sonnet-4-5" and model._http.url == "https://api.anthropic.com/v1/messages"


async def test_model_from_env_talks_to_the_configured_server(
    server: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("VMEM_ANTHROPIC_MODEL", "claude-haiku-4-5")
    model = model_from_env("anthropic")
    assert isinstance(model, AnthropicModel)
    async with model:
        reply = await model.complete("", (QUESTION,))
    assert reply.model == "claude-haiku-4-5-20250929" and server.seen[0].body["model"] == "claude-haiku-4-5"
