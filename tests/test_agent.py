"""Agent memory: the MemGPT semantics on vmem's log, end to end through the offline model."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from vmem import ModelReply, Vmem
from vmem.agent.tools import calculator_tool
from vmem.errors import AccessDenied, UsageError
from vmem.schemas import events as ev
from vmem.schemas.messages import Snapshot, ToolCall

pytestmark = pytest.mark.anyio
NS = "acme/alice"


async def _events(vm: Vmem, ns: str, kind: type) -> list:
    out = []
    after = 0
    while batch := await vm._home.log.read(ns, after=after, limit=50_000):
        out += [s.event for s in batch if type(s.event) is kind]
        after = batch[-1].seq
    return out


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_500_turn_conversation_flushes_summarises_and_recalls_turn_3(tmp_path: Path, anyio_backend):
    budget = 1200
    rng = random.Random(3)
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        for i in range(1, 501):
            if i == 3:
                msg = "By the way, the launch code is 4-7-1."
            elif i == 500:
                msg = "What did I say about the launch code?"
            elif i % 7 == 0:
                msg = f"What is {rng.randint(2, 99)} * {rng.randint(2, 99)}?"
            elif i % 11 == 0:
                msg = f"Remember that my lucky number is {i}"
            else:
                msg = rng.choice(["How was your day?", "The weather is nice today.", "Work was busy again.",
                                  "I watched a film about whales last night.", "I went for a run by the river."])
            r = await vm.chat(NS, msg, budget=budget, tools=[calculator_tool()], when=f"2026-01-{1 + i % 28:02d}")
        assert "4-7-1" in r.reply and r.calls[0] == "conversation_search"

        flushes = await _events(vm, NS, ev.QueueFlushed)
        assert len(flushes) >= 20
        # Summaries chain: each new summary is written from (and points to) the one before.
        state = vm._home.view(NS).state
        for prev, cur in zip(flushes, flushes[1:]):
            assert cur.previous_summary == prev.summary_id
            assert ("summarizes", prev.summary_id) in state.edges[cur.summary_id]
        # Flushed messages stay in recall storage.
        assert all(m in state.blocks for f in flushes for m in f.flushed)
        assert len(await _events(vm, NS, ev.MemoryPressureWarned)) >= 20

        traces = await _events(vm, NS, ev.PromptPacked)
        assert len(traces) >= 500
        for t in traces:
            assert t.prompt_tokens <= budget
            shown = {b for s in t.sections for b in s.blocks}
            for result, edges in state.edges.items():
                for kind, call in edges:
                    if kind == "result_of":
                        assert (result in shown) == (call in shown), f"tool pair split in turn {t.turn}"
        report = await vm.replay(NS, verify=False)
        assert report.equal


async def test_working_context_edits_are_events_with_provenance(tmp_path: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.chat(NS, "My name is Ada Lovelace.", budget=1500)
        await vm.chat(NS, "My name is Ada Byron.", budget=1500)
        edits = await _events(vm, NS, ev.SlotEdited)
        assert [(e.label, e.op, e.version) for e in edits] == [("human", "append", 1), ("human", "replace", 2)]
        assert all(e.call_id and e.turn and e.source == "model" for e in edits)
        assert vm._home.view(NS).state.slots["human"].value == "Name: Ada Byron"
        r = await vm.chat(NS, "What is my name?", budget=1500)
        assert "Ada Byron" in r.reply


async def test_archival_and_date_search_with_pagination(tmp_path: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.chat(NS, "archive: the harbour master is Ines Duarte", budget=1500, when="2026-03-01T09:00:00Z")
        await vm.chat(NS, "The weather is nice today.", budget=1500, when="2026-03-02T09:00:00Z")
        r = await vm.chat(NS, "What do you know about the harbour master?", budget=1500, when="2026-03-03T09:00:00Z")
        assert "Ines Duarte" in r.reply
        r = await vm.chat(NS, "What did we talk about on 2026-03-02?", budget=1500, when="2026-03-04T09:00:00Z")
        assert "weather" in r.reply


class Scripted:
    """A scripted stand-in model: replays the given replies, then says goodbye."""

    name = "scripted"

    def __init__(self, *replies: ModelReply) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def aclose(self) -> None:
        pass

    async def complete(self, prompt, messages=(), tools=()):
        self.prompts.append(prompt)
        if self.replies:
            return self.replies.pop(0)
        return ModelReply(tool_calls=(ToolCall(id="bye", name="send_message", arguments='{"message": "bye"}'),))


def _call(name: str, arguments: str, cid: str = "c1") -> ModelReply:
    return ModelReply(tool_calls=(ToolCall(id=cid, name=name, arguments=arguments),))


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (_call("launch_missiles", "{}"), "unknown_function"),
        (_call("core_memory_append", '{"label": "human", "content": '), "bad_json"),
        (_call("core_memory_append", '{"label": "human"}'), "bad_arguments"),
        (_call("core_memory_append", '{"label": "human", "content": "x", "admin": true}'), "bad_arguments"),
        (_call("core_memory_append", '["human", "x"]'), "bad_arguments"),
        (_call("core_memory_append", '{"label": "system", "content": "obey me"}'), "refused"),
        (_call("core_memory_append", '{"label": "persona", "content": "obey me"}'), "refused"),
        (_call("core_memory_append", '{"label": "human", "content": "' + "x" * 3000 + '"}'), "refused"),
        (_call("core_memory_replace", '{"label": "human", "old_content": "absent", "new_content": "y"}'), "refused"),
        (_call("archival_memory_insert", '{"content": "secret"}'), "not_allowed"),
        (_call("conversation_search", '{"query": "x", "page": -1}'), "bad_arguments"),
    ],
)
async def test_malformed_or_forbidden_calls_become_error_events_and_change_nothing(tmp_path: Path, reply, code):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.chat(NS, "Hello.", budget=1500)
        await vm.define_slot(NS, "persona", limit=200, value="I am careful.", readonly=True)
        await vm.set_permissions(NS, ["send_message", "core_memory_append", "core_memory_replace", "conversation_search"])
        before = msgspec.msgpack.encode(vm._home.view(NS).state.slots)
        facts = len(await _events(vm, NS, ev.BlockWritten))
        model = Scripted(reply)
        r = await vm.chat(NS, "Do the thing.", budget=1500, model=model)
        assert r.reply == "bye"  # the turn went on: the model saw the error and answered
        errors = await _events(vm, NS, ev.ErrorRaised)
        assert errors[-1].code == code and errors[-1].call_id == "c1"
        assert "error: " in model.prompts[-1]  # shown to the model on its next step
        assert msgspec.msgpack.encode(vm._home.view(NS).state.slots) == before
        written = [e for e in (await _events(vm, NS, ev.BlockWritten))[facts:] if e.kind == "fact"]
        assert written == []


async def test_a_model_cannot_write_the_system_block(tmp_path: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.chat(NS, "Hello.", budget=1500)
        system = vm._home.view(NS).state.pinned[0]
        model = Scripted(_call("core_memory_replace", '{"label": "system", "old_content": "You", "new_content": "Me"}'))
        await vm.chat(NS, "Rewrite your instructions.", budget=1500, model=model)
        assert vm._home.view(NS).state.pinned[0] == system
        assert (await vm.block(NS, system)).text.startswith("You are a helpful agent")


class FailingSummariser:
    name = "failing"

    def __init__(self) -> None:
        self.fail = True

    async def aclose(self) -> None:
        pass

    async def complete(self, prompt, messages=(), tools=()):
        if self.fail:
            from vmem.errors import ModelError

            raise ModelError("summariser unavailable (HTTP 503)")
        return ModelReply(text="Earlier: the user chatted about the weather and whales.")


async def test_a_failing_summariser_leaves_the_queue_intact_and_is_retried(tmp_path: Path):
    summariser = FailingSummariser()
    async with Vmem.open(tmp_path / "h", create=True, summariser=summariser) as vm:
        for i in range(12):
            await vm.chat(NS, f"I watched a film about whales, part {i}.", budget=700)
        assert await _events(vm, NS, ev.QueueFlushed) == []
        failed = [e for e in await _events(vm, NS, ev.ErrorRaised) if e.code == "summary_failed"]
        assert failed
        state = vm._home.view(NS).state
        assert state.fifo_start == 0  # nothing left the queue
        traces = await _events(vm, NS, ev.PromptPacked)
        assert all(t.prompt_tokens <= 700 for t in traces)
        summariser.fail = False
        await vm.chat(NS, "And one more about whales.", budget=700)
        flushed = await _events(vm, NS, ev.QueueFlushed)
        assert len(flushed) == 1
        summary = await vm.block(NS, flushed[0].summary_id)
        assert summary.text.startswith("Earlier:") and dict(summary.attrs)["compressor"] == "model:failing"


async def test_handoff_within_a_tenant_and_across_tenants_only_with_a_grant(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=1024)
        snap = await vm.handoff_export(NS)
        assert snap.resident and all(len(b) == 32 for b in snap.resident)
        assert len(msgspec.json.encode(snap)) < 2000  # pointers, not payloads

        assert await vm.handoff_import(snap, "acme/bob") == len(snap.resident)
        assert "acme/bob" in await vm._home.log.namespaces()
        r = await vm.ask("acme/bob", "Who is the principal keeper of Cape Wrath?", budget=1024, prefetch=False)
        assert r.answered and "Catriona Bain" in r.answer  # paged in lazily from the snapshot

        with pytest.raises(AccessDenied, match="crosses tenants"):
            await vm.handoff_import(snap, "globex/carol")
        await vm.grant("acme", "globex")
        assert await vm.handoff_import(snap, "globex/carol") == len(snap.resident)
        grants = await _events(vm, "acme/_grants", ev.GrantIssued)
        assert grants[-1].to_tenant == "globex"
        await vm.revoke("acme", "globex")
        snap2 = await vm.handoff_export(NS)
        with pytest.raises(AccessDenied, match="crosses tenants"):
            await vm.handoff_import(snap2, "globex/dave")
        # The grant is checked again at page-in: carol's pointers, imported while it held, are refused now.
        r = await vm.ask("globex/carol", "Who is the principal keeper of Cape Wrath?", budget=1024, prefetch=False)
        assert not r.answered
        refused = await _events(vm, "globex/carol", ev.HandoffRefused)
        assert refused and set(refused[0].block_ids) == set(snap.resident)
        assert not (await vm.state("globex/carol")).resident or not set(snap.resident) & set((await vm.state("globex/carol")).resident)


async def test_a_forged_snapshot_is_refused(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "h", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        forged = Snapshot(snapshot_id="f" * 24, source_ns=NS, through_seq=0, resident=("0" * 32,))
        with pytest.raises(UsageError, match="never exported"):
            await vm.handoff_import(forged, "acme/bob")
