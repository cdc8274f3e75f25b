"""Conformance tests every :class:`vmem.models.model.Model` must pass.

Subclass :class:`ModelConformance` in a test module that provides a
``model`` fixture (a fresh model, closed by the fixture afterwards) and an
``anyio_backend`` fixture.  A model in front of a provider subclasses
:class:`ProviderModelConformance` instead and also provides ``provider``: the
fake provider (:class:`fakehttp.FakeProvider`) the model talks to, whose
script the tests use to make it fail; the model's ``sleep`` must not wait and
its ``max_retries`` must be at most 3.  The tests use only the Model
interface: a reply is judged by its shape (text and/or calls of offered
tools), never by what a particular model says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import anyio
import pytest
from fakehttp import FakeProvider, Reply, provider_error

from vmem.errors import ModelError
from vmem.models.model import Model, ModelReply, ToolSpec
from vmem.schemas.messages import ChatMessage

SYSTEM = ChatMessage(role="system", content="<Instructions>\nAnswer briefly.\n</Instructions>", cache_boundary=True)
CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate an arithmetic expression.",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)
SEND = ToolSpec(
    name="send_message",
    description="Say something to the user.",
    parameters={"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)
TOOLS = (CALCULATOR, SEND)


def turn(question: str) -> tuple[str, tuple[ChatMessage, ...]]:
    """A packed prompt and its messages for one user question, as the packer lays them out."""
    prompt = f"{SYSTEM.content}\n<Recent>\nuser: {question}\n</Recent>"
    return prompt, (SYSTEM, ChatMessage(role="user", content=question))


def check_reply(reply: ModelReply, tools: Sequence[ToolSpec] = ()) -> None:
    """A reply as the interface promises it: text and/or well-formed calls of offered tools."""
    assert isinstance(reply, ModelReply)
    assert reply.text or reply.tool_calls, reply
    assert reply.input_tokens >= 0 and reply.output_tokens >= 0
    offered = {t.name for t in tools}
    ids = [c.id for c in reply.tool_calls]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for call in reply.tool_calls:
        assert call.name in offered, (call.name, offered)
        assert isinstance(json.loads(call.arguments), dict), call.arguments


class ModelConformance:
    """The behaviour shared by every Model; subclass it with a ``model`` fixture."""

    pytestmark = pytest.mark.anyio

    async def test_has_a_name(self, model: Model) -> None:
        assert isinstance(model.name, str) and model.name

    async def test_a_question_gets_a_reply(self, model: Model) -> None:
        prompt, messages = turn("Who is the principal keeper of Cape Wrath?")
        reply = await model.complete(prompt, messages)
        check_reply(reply)
        assert reply.tool_calls == ()  # no tools offered, none called

    async def test_tools_are_offered_and_their_results_read(self, model: Model) -> None:
        prompt, messages = turn("What is 6 * 7?")
        first = await model.complete(prompt, messages, tools=TOOLS)
        check_reply(first, TOOLS)
        assert first.tool_calls, "offered a calculator for arithmetic, the model calls a tool"
        follow = (
            *messages,
            ChatMessage(role="assistant", content=first.text, tool_calls=first.tool_calls),
            *(ChatMessage(role="tool", content="42", tool_call_id=c.id) for c in first.tool_calls),
        )
        check_reply(await model.complete(prompt, follow, tools=TOOLS), TOOLS)

    async def test_concurrent_calls_each_get_a_reply(self, model: Model) -> None:
        questions = [f"What does station {i} log at dawn?" for i in range(4)]
        replies: dict[int, ModelReply] = {}

        async def ask(i: int) -> None:
            replies[i] = await model.complete(*turn(questions[i]))

        async with anyio.create_task_group() as tg:
            for i in range(len(questions)):
                tg.start_soon(ask, i)
        assert sorted(replies) == list(range(len(questions)))
        for reply in replies.values():
            check_reply(reply)

    async def test_aclose_is_idempotent_and_a_later_call_reopens(self, model: Model) -> None:
        name = model.name
        check_reply(await model.complete(*turn("Where is Ailsa Craig?")))
        await model.aclose()
        await model.aclose()
        check_reply(await model.complete(*turn("Where is Ailsa Craig?")))
        await model.aclose()
        assert model.name == name


class ProviderModelConformance(ModelConformance):
    """What a model in front of a provider adds: the provider's failures are ModelErrors."""

    async def test_a_refusal_is_a_model_error_at_once(self, model: Model, provider: FakeProvider) -> None:
        provider.script.append(Reply(401, provider_error("authentication_error", "invalid api key")))
        with pytest.raises(ModelError, match="401"):
            await model.complete(*turn("Anyone there?"))
        assert len(provider.seen) == 1  # not retried: retrying cannot fix it

    @pytest.mark.parametrize("status", [408, 429, 500, 503, 529])
    async def test_a_passing_failure_is_retried(self, model: Model, provider: FakeProvider, status: int) -> None:
        provider.script.append(Reply(status, provider_error("overloaded_error", "try again")))
        check_reply(await model.complete(*turn("Anyone there?")))
        assert len(provider.seen) == 2

    async def test_a_lasting_failure_is_a_model_error(self, model: Model, provider: FakeProvider) -> None:
        provider.script.extend(Reply(503, b"upstream unavailable") for _ in range(10))
        with pytest.raises(ModelError, match="503"):
            await model.complete(*turn("Anyone there?"))
        assert 1 < len(provider.seen) < 10

    async def test_a_malformed_reply_is_a_model_error(self, model: Model, provider: FakeProvider) -> None:
        provider.script.append(Reply(200, b"<html>gateway</html>"))
        with pytest.raises(ModelError, match="malformed"):
            await model.complete(*turn("Anyone there?"))
