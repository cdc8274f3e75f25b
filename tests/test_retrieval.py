"""Retrieval and paging through the actors: plugins, timeouts, faults, eviction policies."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from vmem import ModelReply, Vmem
from vmem.retrieval.retrievers import RetrievalContext, RetrievalQuery
from vmem.schemas.events import ErrorRaised, PageFaultRaised, PromptPacked
from vmem.schemas.messages import (
    EvictReply,
    EvictRequest,
    FaultReply,
    FaultRequest,
    SearchReply,
    SearchRequest,
)

pytestmark = pytest.mark.anyio
NS = "acme/agent7"


class Boom:
    name = "boom"

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext):
        raise RuntimeError("index offline")


class Sleepy:
    name = "sleepy"

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext):
        await anyio.sleep(30)
        return []


class Favourite:
    """A plugin that always recommends one block (the last page of the document)."""

    name = "favourite"

    async def search(self, query: RetrievalQuery, ctx: RetrievalContext):
        pages = [b for b in ctx.state.order if ctx.state.blocks[b].kind == "page"]
        return [(pages[-1], 5.0)]


async def _events(vm: Vmem, kind: type) -> list:
    return [s.event for s in await vm._home.log.read(NS, limit=10**6) if type(s.event) is kind]


async def test_a_failing_and_a_slow_plugin_are_recorded_not_fatal(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True, retrievers=[Boom(), Sleepy(), Favourite()], retriever_timeout_s=0.3) as vm:
        await vm.ingest(NS, handbook_file)
        reply = await vm._call(NS, "retriever", "search", SearchRequest(ns=NS, query="Cape Wrath keeper", limit=10), SearchReply)
        assert any(e.startswith("boom: RuntimeError: index offline") for e in reply.errors)
        assert any(e.startswith("sleepy: timed out") for e in reply.errors)
        assert any("bm25" in c.scores for c in reply.candidates)
        assert any("favourite" in c.scores for c in reply.candidates)
        r = await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=1024)
        assert r.answered and "Catriona Bain" in r.answer
        trace = (await _events(vm, PromptPacked))[-1]
        assert len(trace.retriever_errors) == 2
        chosen = [c for c in trace.candidates if c.chosen]
        assert chosen and all(c.scores for c in chosen if c.fused < 1e9)


async def test_explicit_fault_by_block_id_loads_that_page(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
        state = vm._home.view(NS).state
        far = next(b for b in reversed(state.order) if state.blocks[b].kind == "page" and b not in state.resident)
        reply = await vm._call(NS, "pager", "fault", FaultRequest(ns=NS, fault_id="manual-1", turn=1, budget=800, block_ids=(far,)), FaultReply)
        assert far in reply.loaded and far in vm._home.view(NS).state.resident


class CitesAbsentPage:
    """A scripted stand-in model: first cites a stored page it was not shown, then answers from it."""

    name = "scripted"

    def __init__(self, page: str) -> None:
        self.page = page
        self.calls = 0

    async def aclose(self) -> None:
        pass

    async def complete(self, prompt, messages=(), tools=()):
        self.calls += 1
        if self.page not in prompt:
            return ModelReply(text=f"I recall this from [{self.page}].")
        return ModelReply(text=f"Found it in [{self.page}].")


async def test_citing_a_stored_page_that_is_not_resident_is_an_implicit_fault(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        state = vm._home.view(NS).state
        page = next(b for b in state.order if state.blocks[b].kind == "page")
        model = CitesAbsentPage(page)
        r = await vm.ask(NS, "zzz qqq", budget=800, model=model)
        assert r.answered and r.cited == (page,) and model.calls == 2
        raised = await _events(vm, PageFaultRaised)
        assert raised[-1].source == "pager" and raised[-1].block_ids == (page,)


async def test_evicting_a_pinned_block_is_refused(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
        state = vm._home.view(NS).state
        system = state.pinned[0]
        page = next(b for b in state.resident if b not in state.pinned)
        reply = await vm._call(NS, "pager", "evict", EvictRequest(ns=NS, turn=1, block_ids=(system, page)), EvictReply)
        assert reply.refused == (system,) and reply.evicted == (page,)
        state = vm._home.view(NS).state
        assert system in state.resident and page not in state.resident
        errors = await _events(vm, ErrorRaised)
        assert errors[-1].code == "pinned"


@pytest.mark.parametrize("policy", ["score", "lru"])
async def test_eviction_policy_decides_which_page_goes(tmp_path: Path, handbook_file: Path, policy: str):
    async with Vmem.open(tmp_path / "h", create=True, policy=policy) as vm:
        await vm.ingest(NS, handbook_file)
        for q in ("Who is the principal keeper of Cape Wrath?", "When was Ailsa Craig lighthouse first lit?",
                  "Who is the principal keeper of Cape Wrath?"):
            r = await vm.ask(NS, q, budget=900)
            assert r.answered
        report = await vm.replay(NS)
        assert report.equal and report.decisions_checked >= 3 and report.decisions_equal == report.decisions_checked
