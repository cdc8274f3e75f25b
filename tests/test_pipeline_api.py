"""The surface a pipeline uses: fault, evict, pin, unpin, watch, events, state hash (embedded, both backends).

tests/test_tenants.py runs the same surface as three processes against
`vmem serve` over NATS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from vmem import State, Vmem, state_hash
from vmem.state.fold import fold

pytestmark = pytest.mark.anyio
NS = "acme/pipe"


async def test_faults_evictions_and_pins_are_events_a_watcher_sees_in_order(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        head = (await vm.state(NS)).head
        seen: list = []

        async def watch() -> None:
            async with aclosing(vm.watch(NS, kinds=["page_loaded", "page_evicted", "page_unpinned", "summary_committed"],
                                         after=head)) as events:
                async for stored in events:
                    seen.append(stored)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            first = await vm.fault(NS, query="Gannet Point radio callsign", budget=600)
            assert first.loaded and not first.error
            second = await vm.fault(NS, query="Cape Wrath principal keeper", budget=600)
            assert second.evicted and second.summaries  # what no longer fits leaves, summarised
            pinned = second.loaded[0]
            assert (await vm.pin(NS, [pinned])).changed == (pinned,)
            refused = await vm.evict(NS, [pinned])
            assert refused.refused == (pinned,) and not refused.evicted
            await vm.unpin(NS, [pinned])
            evicted = await vm.evict(NS, [pinned])
            assert evicted.evicted == (pinned,)
            assert pinned not in (await vm.state(NS)).resident
            with anyio.fail_after(10):
                while not any(s.event.block_id == pinned for s in seen if type(s.event).__name__ == "PageEvicted"):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        kinds = [type(s.event).__name__ for s in seen]
        assert {"PageLoaded", "PageEvicted", "PageUnpinned", "SummaryCommitted"} <= set(kinds)
        seqs = [s.seq for s in seen]
        assert seqs == sorted(set(seqs))  # in order, none twice
        # Everything the watcher saw is in the log, and folding the log gives the live state.
        state = State(ns=NS)
        async for batch in vm.events(NS):
            fold((s.event for s in batch), state)
        assert state_hash(state) == await vm.state_hash(NS)


async def test_watch_from_now_sees_only_what_comes(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        got: list = []

        async def watch() -> None:
            async with aclosing(vm.watch(NS)) as events:
                async for stored in events:
                    got.append(stored)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.05)
            r = await vm.ask(NS, "Who is the principal keeper of Cape Wrath?", budget=800)
            with anyio.fail_after(10):
                while not any(type(s.event).__name__ == "TurnEnded" for s in got):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert r.answered
        kinds = [type(s.event).__name__ for s in got]
        assert kinds[0] == "BlockWritten" and "TurnStarted" in kinds and "DocumentIngested" not in kinds  # from the turn on


def test_log_tail_follow_prints_events_as_another_process_commits_them(tmp_path: Path, handbook_file: Path):
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "vmem.cli", f"--home={home}"]
    subprocess.run([*cli, "init"], check=True, capture_output=True)
    subprocess.run([*cli, "ingest", str(handbook_file), "--ns", NS], check=True, capture_output=True)
    follow = subprocess.Popen([*cli, "log", "tail", "--ns", NS, "-n", "1", "--follow", "--json", "--kind", "turn_ended"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)  # it has started following
        subprocess.run([*cli, "ask", "Who is the principal keeper of Cape Wrath?", "--ns", NS, "--budget", "800"],
                       check=True, capture_output=True, timeout=120)
        line = follow.stdout.readline()
        assert json.loads(line)["event"]["type"] == "turn_ended"
    finally:
        follow.terminate()
        follow.communicate(timeout=10)


def test_vmem_schema_describes_every_wire_format():
    out = subprocess.run([sys.executable, "-m", "vmem.cli", "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    assert schema["routes"]["pager.fault"] == "fault" and schema["routes"]["reader.read"] == "read"
    tags = {d["properties"]["msg"]["enum"][0] for d in schema["$defs"].values() if "msg" in d.get("properties", {})}
    assert {"turn", "fault", "evict", "pin", "read", "error", "committed"} <= tags
    events = {d["properties"]["type"]["enum"][0] for d in schema["$defs"].values() if "type" in d.get("properties", {})
              and "enum" in d["properties"]["type"]}
    assert {"page_evicted", "summary_committed", "handoff_refused"} <= events
