"""The embedded runtime end to end, through the public async API, on asyncio and trio."""

from __future__ import annotations

from pathlib import Path

import pytest

import vmem
from vmem import Vmem
from vmem.assembly.tokens import get_tokenizer
from vmem.schemas.messages import (
    FaultReply,
    FaultRequest,
    PackReply,
    ReduceReply,
    ReduceRequest,
    TurnRequest,
)

pytestmark = pytest.mark.anyio
NS = "acme/agent7"
TOK = get_tokenizer("cl100k_base")


async def test_a_question_is_answered_from_a_page_that_was_faulted_in(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        ing = await vm.ingest(NS, handbook_file)
        assert ing.pages > 50 and not ing.duplicate
        r = await vm.ask(NS, "What is the radio callsign of Gannet Point station?", budget=1024)
        assert r.answered and "GAN100" in r.answer
        assert r.faults >= 1 and r.cited and set(r.cited) <= set(r.loaded)
        assert r.prompt_tokens <= 1024
        page = await vm.block(NS, r.cited[0])
        assert "GAN100" in page.text


async def test_eviction_under_pressure_commits_summaries_and_replay_is_equal(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        results = [
            await vm.ask(NS, q, budget=800)
            for q in (
                "Who is the principal keeper of Cape Wrath?",
                "When was Ailsa Craig lighthouse first lit?",
                "What is the radio callsign of Sumburgh station?",
            )
        ]
        assert all(r.answered for r in results)
        assert sum(r.evictions for r in results) > 0 and sum(len(r.summaries) for r in results) > 0
        summary = await vm.block(NS, results[-1].summaries[0] if results[-1].summaries else next(s for r in results for s in r.summaries))
        assert summary.kind == "summary"
        report = await vm.replay(NS)
        assert report.equal and report.prompts_checked == report.prompts_equal > 0


async def test_same_inputs_give_the_same_state_hash_and_prompt_bytes(tmp_path: Path, handbook_file: Path):
    outcomes = []
    for run in ("a", "b"):
        async with Vmem.open(tmp_path / run, create=True) as vm:
            await vm.ingest(NS, handbook_file)
            r1 = await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=700)
            r2 = await vm.ask(NS, "What hazard should mariners beware of near Sumburgh?", budget=700)
            rep = await vm.replay(NS)
            outcomes.append((r1.prompt_sha256, r2.prompt_sha256, rep.state_hash))
    assert outcomes[0] == outcomes[1]


async def test_ingesting_the_same_file_twice_commits_nothing_new(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        first = await vm.ingest(NS, handbook_file)
        last = await vm._home.log.last_seq(NS)
        again = await vm.ingest(NS, handbook_file)
        assert again.duplicate and not first.duplicate
        assert await vm._home.log.last_seq(NS) == last


async def test_unknown_namespace_is_a_clear_error(tmp_path: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        with pytest.raises(vmem.UnknownNamespace, match="has no events"):
            await vm.ask("acme/nobody", "hello?", budget=512)


async def test_a_fault_for_a_page_that_does_not_exist_is_an_error_event_not_a_crash(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        reply = await vm._call(NS, "pager", "fault",
            FaultRequest(ns=NS, fault_id="f-missing", turn=1, budget=512, block_ids=("0" * 32,)),
            FaultReply,
        )
        assert "no such block" in reply.error and not reply.loaded
        tail = await vm.tail(NS, 3)
        assert [type(s.event).__name__ for s in tail][-2:] == ["ErrorRaised", "PageFaultResolved"]


@pytest.mark.parametrize(
    ("text", "outcome", "error"),
    [
        ("", "error", "no text"),
        ("PAGE_FAULT:   ", "error", "needs words"),
        ("It is GAN100 [" + "f" * 32 + "]", "error", "not in the prompt"),
    ],
)
async def test_untrusted_model_output_becomes_an_error_event(tmp_path, handbook_file, text, outcome, error):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
        turn = vm._home.view(NS).state.turn
        await vm._call(NS, "pager", "turn", TurnRequest(ns=NS, turn=turn, attempt=9, budget=800), PackReply)
        before = vm._home.view(NS).state.resident.copy()
        red = await vm._call(NS, "reducer", "reduce",
            ReduceRequest(ns=NS, turn=turn, attempt=9, model="test", text=text),
            ReduceReply,
        )
        assert red.outcome == outcome and error in red.error
        assert vm._home.view(NS).state.resident == before


async def test_reopening_a_home_resumes_from_a_snapshot(tmp_path: Path, handbook_file: Path, monkeypatch):
    import vmem.storage.view as view_mod

    monkeypatch.setattr(view_mod, "SNAPSHOT_EVERY", 50)
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
        live = (await vm.replay(NS)).live_state_hash
    async with Vmem.open(tmp_path / "home") as vm:
        snap = vm._home.snapshots.load(NS)
        assert snap is not None and snap[0] > 0
        report = await vm.replay(NS)
        assert report.equal and report.state_hash == live
        mid = await vm.replay(NS, until=snap[0] + 3)
        assert mid.equal and mid.until == snap[0] + 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_50_mb_file_is_ingested_in_bounded_memory(tmp_path: Path, handbook_text: str, anyio_backend):
    import tracemalloc

    doc = tmp_path / "big.md"
    size = 0
    with doc.open("w", encoding="utf-8") as f:
        volume = 0
        while size < 50 * 2**20:
            chunk = handbook_text.replace("Northern Lights", f"Northern Lights, volume {volume}")
            f.write(chunk)
            size += len(chunk.encode())
            volume += 1
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        tracemalloc.start()
        try:
            result = await vm.ingest(NS, doc, page_tokens=1024)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.bytes == doc.stat().st_size and result.pages > 10_000
        # The file is streamed: what stays is the page table (about 1 KB a
        # page), not the text (50 MB) nor its events (over 50 MB encoded).
        assert peak < 64 * 2**20, f"peak Python heap {peak / 2**20:.0f} MiB"
        assert vm._home.view(NS).state.counters["blocks"] == result.pages
