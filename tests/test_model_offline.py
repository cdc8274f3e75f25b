"""OfflineModel: the shared Model conformance suite, and what the offline stand-in answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conformance.model_suite import TOOLS, ModelConformance, turn

from vmem.models.offline import OfflineModel

pytestmark = pytest.mark.anyio


@pytest.fixture
async def model() -> AsyncIterator[OfflineModel]:
    offline = OfflineModel()
    try:
        yield offline
    finally:
        await offline.aclose()


class TestOfflineModelConformance(ModelConformance):
    """The shared suite under asyncio and trio (there is no provider to fail)."""


async def test_answers_from_a_page_in_the_prompt_citing_it() -> None:
    prompt, messages = turn("Who keeps the Cape Wrath light?")
    page = "<Retrieved>\n[0123456789abcdef] page 4\nThe Cape Wrath light is kept by Ann Bell. It was lit in 1828.\n</Retrieved>"
    reply = await OfflineModel().complete(f"{page}\n{prompt}", messages)
    assert reply.text == "The Cape Wrath light is kept by Ann Bell. [0123456789abcdef]"
    assert reply.model == "offline" and reply.input_tokens > 0 and reply.output_tokens > 0


async def test_asks_for_a_page_fault_when_no_page_answers() -> None:
    reply = await OfflineModel().complete(*turn("Who keeps the Cape Wrath light?"))
    assert reply.text == "PAGE_FAULT: keeps Cape Wrath light"


async def test_with_tools_it_calls_them_by_rule() -> None:
    first = await OfflineModel().complete(*turn("What is 6 * 7?"), tools=TOOLS)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("calculator", '{"expression":"6 * 7"}')]
