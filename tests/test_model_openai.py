"""OpenAIChatModel against a real HTTP server on 127.0.0.1 that checks OpenAI's request shape.

The fake provider (tests/fake_openai.py) answers like OpenAI's chat
completions and rejects what the real API would reject.  The shared Model
conformance suite runs against it too.  Every test runs under asyncio and
trio.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from conformance.model_suite import ProviderModelConformance
from fake_openai import KEY, RAW_ARGUMENTS, FakeOpenAI
from fakehttp import Reply, Sleeps, running

from vmem.errors import ModelError, UsageError
from vmem.models.config import model_from_env
from vmem.models.http_retry import (
    ModelHTTPError,
    Send,
    Sleep,
    backoff_delay,
    retry_plan,
    retryable_status,
)
from vmem.models.model import Model, ModelReply, ToolSpec
from vmem.models.openai import OpenAIChatModel
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
def server() -> Iterator[FakeOpenAI]:
    with running(FakeOpenAI()) as fake:
        yield fake


def make(server: FakeOpenAI, sleeps: Sleeps | None = None, **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("api_key", KEY)
    return OpenAIChatModel(server.base_url, "gpt-test", sleep=sleeps if sleeps is not None else Sleeps(), **kwargs)


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


@pytest.fixture
def provider(server: FakeOpenAI) -> FakeOpenAI:
    return server


@pytest.fixture
async def model(server: FakeOpenAI) -> AsyncIterator[OpenAIChatModel]:
    adapter = make(server, max_retries=2)
    try:
        yield adapter
    finally:
        await adapter.aclose()


class TestOpenAIChatModelConformance(ProviderModelConformance):
    """The shared Model suite against the fake OpenAI server, which rejects what the real API would."""


# -- shapes -------------------------------------------------------------------


async def test_plain_text_exact_request_and_reply(server: FakeOpenAI) -> None:
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        typed: Model = model
        reply = await typed.complete("the prompt is ignored", (SYSTEM, QUESTION))
    (seen,) = server.seen
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": SYSTEM.content},  # cache_boundary: nothing on the wire
            {"role": "user", "content": QUESTION.content},
        ],
        "max_tokens": 1024,
        "temperature": 0.0,
    }
    assert reply == ModelReply(
        text=f"echo: {QUESTION.content}",
        input_tokens=22,
        output_tokens=5,
        stop_reason="stop",
        model="gpt-test-2024-07-18",
    )
    assert sleeps == []
    assert model.name == "openai/gpt-test" and KEY not in repr(model)


async def test_without_key_no_authorization_and_messages_sent_as_they_are(server: FakeOpenAI) -> None:
    server.key = None
    messages = (
        ChatMessage(role="user", content="one"),
        ChatMessage(role="user", content="two"),
        ChatMessage(role="assistant", content="three"),
        ChatMessage(role="assistant", content="four"),
        ChatMessage(role="user", content="five"),
    )
    async with make(server, api_key=None, max_tokens=77, temperature=0.5) as model:
        reply = await model.complete("", messages)
    (seen,) = server.seen
    assert "authorization" not in seen.headers
    assert seen.body["messages"] == [{"role": m.role, "content": m.content} for m in messages]
    assert seen.body["max_tokens"] == 77 and seen.body["temperature"] == 0.5
    assert reply.text == "echo: five"


async def test_tool_call_round_trip(server: FakeOpenAI) -> None:
    async with make(server) as model:
        first = await model.complete("", (SYSTEM, QUESTION), tools=[WEATHER])
        assert first.text == "" and first.stop_reason == "tool_calls"
        assert first.tool_calls == (ToolCall(id="call_1", name="get_weather", arguments=RAW_ARGUMENTS),)
        follow = (
            SYSTEM,
            QUESTION,
            ChatMessage(role="assistant", content="", tool_calls=first.tool_calls),
            ChatMessage(role="tool", content='{"temp_c": 21}', tool_call_id="call_1"),
        )
        second = await model.complete("", follow, tools=[WEATHER])
    assert second.text == 'Result: {"temp_c": 21}' and second.tool_calls == () and second.input_tokens == 44
    one, two = (s.body for s in server.seen)
    assert one["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER.parameters},
        }
    ]
    assert one["tool_choice"] == "auto"
    assert two["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,  # no text: null, as OpenAI sends it
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": RAW_ARGUMENTS}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]


async def test_assistant_text_with_tool_calls_and_object_arguments(server: FakeOpenAI) -> None:
    calls = (
        ToolCall(id="a", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="b", name="get_weather", arguments='{"city":"Rome"}'),
    )
    # Some compatible servers send arguments as an object: encoded compact and sorted.
    odd = {
        "choices": [
            {
                "message": {
                    "content": "Checking.",
                    "tool_calls": [{"id": "c", "function": {"name": "get_weather", "arguments": {"z": 1, "a": [2]}}}],
                },
                "finish_reason": None,
            }
        ]
    }
    server.script.extend([Reply(), Reply(body=json.dumps(odd).encode())])
    messages = (
        QUESTION,
        ChatMessage(role="assistant", content="Let me look.", tool_calls=calls),
        ChatMessage(role="tool", content="12C", tool_call_id="a"),
        ChatMessage(role="tool", content="25C", tool_call_id="b"),
    )
    async with make(server) as model:
        reply = await model.complete("", messages, tools=[WEATHER])
        odd_reply = await model.complete("", (QUESTION,))
    assert server.seen[0].body["messages"][1]["content"] == "Let me look."
    assert [c["id"] for c in server.seen[0].body["messages"][1]["tool_calls"]] == ["a", "b"]
    assert reply.text == "Result: 25C"
    assert odd_reply == ModelReply(
        text="Checking.",
        tool_calls=(ToolCall(id="c", name="get_weather", arguments='{"a":[2],"z":1}'),),
        model="gpt-test",
    )


# -- retries and errors -------------------------------------------------------


async def test_429_honours_retry_after_then_succeeds(server: FakeOpenAI) -> None:
    server.script.append(Reply(429, error_body("Rate limit reached", "requests"), {"Retry-After": "3"}))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        reply = await model.complete("", (SYSTEM, QUESTION))
    assert sleeps == [3.0]
    assert len(server.seen) == 2 and server.seen[0].body == server.seen[1].body
    assert reply.text == f"echo: {QUESTION.content}"


async def test_500_then_success_backs_off(server: FakeOpenAI) -> None:
    server.script.append(Reply(500, error_body("The server had an error", "server_error")))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        reply = await model.complete("", (QUESTION,))
    assert sleeps == [0.5] and len(server.seen) == 2 and reply.stop_reason == "stop"


async def test_retries_exhausted_raise_with_status(server: FakeOpenAI) -> None:
    server.script.extend(Reply(503, b"upstream unavailable") for _ in range(6))
    sleeps = Sleeps()
    async with make(server, sleeps, max_retries=5) as model:
        with pytest.raises(ModelHTTPError) as info:
            await model.complete("", (QUESTION,))
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]  # exponential, capped at 8 s
    assert len(server.seen) == 6
    err = info.value
    assert isinstance(err, ModelError) and err.status == 503 and err.attempts == 6 and err.provider == "openai"
    assert "openai" in str(err) and "after 6 attempts" in str(err)
    assert "HTTP 503" in str(err) and "upstream unavailable" in str(err)


async def test_400_fails_at_once_with_the_providers_reason(server: FakeOpenAI) -> None:
    # A tool result answering no call: the fake rejects it as OpenAI does.
    orphan = (QUESTION, ChatMessage(role="tool", content="12C", tool_call_id="call_x"))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelHTTPError) as info:
            await model.complete("", orphan)
    assert len(server.seen) == 1 and sleeps == []
    assert info.value.status == 400 and info.value.attempts == 1
    assert "HTTP 400 (invalid_request_error: " in str(info.value) and "call_x" in str(info.value)


@pytest.mark.parametrize(("status", "kind"), [(401, "invalid_api_key"), (404, "model_not_found")])
async def test_other_4xx_fail_at_once(server: FakeOpenAI, status: int, kind: str) -> None:
    server.script.append(Reply(status, error_body("nope", kind), {"x-request-id": "req_42"}))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelHTTPError, match=rf"HTTP {status} \({kind}: nope\).*request id req_42"):
            await model.complete("", (QUESTION,))
    assert len(server.seen) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>Bad gateway page</html>", "malformed openai response.*<html>"),
        (b'{"object": "chat.completion"}', "missing required field `choices`"),
        (b'{"choices": []}', "`choices` is empty"),
        (
            b'{"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f"}}]}}]}',
            r"missing required field `arguments`.*choices\[0\]",
        ),
        (b'{"choices": [{"message": {"content": 7}}]}', r"Expected `str \| null`"),
    ],
)
async def test_malformed_reply_is_a_model_error(server: FakeOpenAI, body: bytes, says: str) -> None:
    server.script.append(Reply(200, body))
    sleeps = Sleeps()
    async with make(server, sleeps) as model:
        with pytest.raises(ModelError, match=says):
            await model.complete("", (QUESTION,))
    assert len(server.seen) == 1 and sleeps == []


async def test_timeout_is_retried_then_fails(server: FakeOpenAI) -> None:
    server.script.extend([Reply(delay=30), Reply(delay=30)])
    sleeps = Sleeps()
    async with make(server, sleeps, timeout=0.2, max_retries=1) as model:
        with pytest.raises(ModelHTTPError, match="after 2 attempts; last: ReadTimeout") as info:
            await model.complete("", (QUESTION,))
    assert info.value.status is None and sleeps == [0.5] and len(server.seen) == 2


async def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    sleeps = Sleeps()
    async with OpenAIChatModel(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, sleep=sleeps) as model:
        with pytest.raises(ModelHTTPError, match="after 3 attempts; last: ConnectError"):
            await model.complete("", (QUESTION,))
    assert sleeps == [0.5, 1.0]


async def test_client_is_lazy_and_closed_by_aclose(server: FakeOpenAI) -> None:
    model = make(server)
    assert model._http._client is None  # nothing opened by the constructor
    await model.complete("", (QUESTION,))
    client = model._http._client
    assert client is not None and not client.is_closed
    await model.aclose()
    assert client.is_closed and model._http._client is None
    await model.aclose()  # twice is fine
    assert (await model.complete("", (QUESTION,))).text  # and a new client is made on use
    await model.aclose()


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ((), "at least one message"),
        ((ChatMessage(role="robot", content="x"),), "role 'robot'"),
        ((ChatMessage(role="tool", content="x"),), "without tool_call_id"),
        ((ChatMessage(role="user", content="x", tool_calls=(ToolCall(id="a", name="f", arguments="{}"),)),), "tool_calls"),
    ],
)
async def test_bad_messages_are_usage_errors_before_any_request(
    server: FakeOpenAI, messages: tuple[ChatMessage, ...], says: str
) -> None:
    async with make(server) as model:
        with pytest.raises(UsageError, match=says):
            await model.complete("", messages)
    assert server.seen == []


def test_retry_plan_and_delays_without_io() -> None:
    def response(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=b"{}")

    assert [backoff_delay(k) for k in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(0, response(429, **{"retry-after": "7"})) == 7.0
    assert backoff_delay(0, response(429, **{"retry-after": "3600"})) == 60.0  # capped
    assert backoff_delay(0, response(429, **{"retry-after-ms": "250"})) == 0.25
    assert backoff_delay(2, response(429, **{"retry-after": "soon"})) == 2.0  # unreadable: backoff
    dated = {"retry-after": "Wed, 21 Oct 2015 07:28:07 GMT", "date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert backoff_delay(0, response(503, **dated)) == 7.0

    plan = retry_plan("p", "http://x", max_retries=2)
    assert next(plan) == Send()
    assert plan.send(response(502)) == Sleep(0.5)
    assert next(plan) == Send()
    assert plan.send(httpx.ConnectError("refused")) == Sleep(1.0)
    assert next(plan) == Send()
    with pytest.raises(StopIteration) as done:
        plan.send(response(201))
    assert done.value.value.status_code == 201
    plan = retry_plan("p", "http://x", max_retries=5)
    next(plan)
    with pytest.raises(ModelHTTPError, match="UnsupportedProtocol"):  # retrying cannot help
        plan.send(httpx.UnsupportedProtocol("ftp"))
    # The rule the model adapters and the HTTP embedder share (the providers' SDKs' rule).
    assert all(retryable_status(s) for s in (408, 429, 500, 502, 503, 504, 520, 529))
    assert not any(retryable_status(s) for s in (400, 401, 403, 404, 409, 413, 422))
    plan = retry_plan("p", "http://x", max_retries=1)
    next(plan)
    assert plan.send(response(408)) == Sleep(0.5)


# -- configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"base_url": "ftp://x"}, "http"),
        ({"model": ""}, "model name"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_configuration_is_a_usage_error(kwargs: dict[str, Any], says: str) -> None:
    args = {"base_url": "http://localhost:8000/v1", "model": "m"} | kwargs
    with pytest.raises(UsageError, match=says):
        OpenAIChatModel(args.pop("base_url"), args.pop("model"), **args)


def test_model_from_env_needs_the_key_and_has_defaults() -> None:
    with pytest.raises(UsageError, match="set the OPENAI_API_KEY environment variable"):
        model_from_env("openai", {"OPENAI_BASE_URL": "http://localhost:8000/v1"})
    model = model_from_env("openai", {"OPENAI_API_KEY": "k"})
    assert isinstance(model, OpenAIChatModel)
    assert model.name == "openai/gpt-4o-mini" and model._http.url == "https://api.openai.com/v1/chat/completions"
    with pytest.raises(UsageError, match="unknown model kind 'gpt'"):
        model_from_env("gpt", {})


async def test_model_from_env_talks_to_the_configured_server(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("VMEM_OPENAI_MODEL", "llama-3.1-8b")
    model = model_from_env("openai")
    assert isinstance(model, OpenAIChatModel)
    async with model:
        reply = await model.complete("", (QUESTION,))
    assert reply.model == "llama-3.1-8b-2024-07-18" and server.seen[0].body["model"] == "llama-3.1-8b"
