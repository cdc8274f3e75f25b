"""The benchmarks run and print what their issues ask for (tiny sizes: figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_recall_prints_recall_per_method_and_budget(tmp_path: Path):
    data = tmp_path / "syn.json"
    subprocess.run([sys.executable, "tools/make_synthetic_locomo.py", str(data), "--conversations", "1", "--sessions", "3"],
                   check=True, cwd=ROOT)
    out = run("tools/bench_recall.py", "--data", str(data), "--budgets", "512,1024", "--json", "--svg", str(tmp_path / "r.svg"))
    assert set(out["recall"]) == {"vmem", "recency", "bm25", "vector"}
    assert all(set(v) == {"512", "1024"} and all(0 <= r <= 1 for r in v.values()) for v in out["recall"].values())
    assert out["questions"] > 0
    assert set(out["by_category"]) >= {"vmem", "recency", "bm25", "vector"} and out["per_category"]
    assert {"bm25", "recency", "within_tolerance"} <= out["calibration"].keys()
    assert all(t["seconds"] > 0 for t in out["conversations"]) and out["embedder"]
    assert all(out["vmem_prompt_tokens"][b]["max"] <= int(b) for b in ("512", "1024"))
    assert (tmp_path / "r.svg").read_text().startswith("<svg")


def test_bench_recall_reads_evidence_as_the_measure_defines(tmp_path: Path):
    """Sessions by N, categories 1-4 only, malformed evidence ids split or dropped, empty questions dropped."""
    turns = lambda s, n: [{"speaker": "Ann" if t % 2 else "Bo", "dia_id": f"D{s}:{t}", "text": f"turn {t} of session {s}"}
                          for t in range(1, n + 1)]
    conv = {"speaker_a": "Ann", "speaker_b": "Bo",
            "session_10": turns(10, 3), "session_10_date_time": "1 pm on 3 May, 2023",
            "session_2": turns(2, 30), "session_2_date_time": "1 pm on 2 May, 2023"}
    conv["session_2"][0]["blip_caption"] = "a photo of a dog"
    qa = [{"question": "q1", "evidence": ["D:2:1"], "category": 1},           # colon after D
          {"question": "q2", "evidence": ["D10:03; D2:2"], "category": 2},    # two ids, a leading zero
          {"question": "q3", "evidence": ["D", "D9:9"], "category": 4},       # nothing left: dropped
          {"question": "q4", "evidence": ["D2:5 D2:6"], "category": 3},       # space-separated
          {"question": "q5", "evidence": ["D2:1"], "category": 5}]            # adversarial: not counted
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps([{"sample_id": "tiny", "conversation": conv, "qa": qa}]))
    out = run("tools/bench_recall.py", "--data", str(data), "--budgets", "4096", "--json")
    assert out["questions"] == 3 and out["dropped"] == {"questions": 1, "evidence_ids": 2}
    assert out["questions_by_category"] == {"1": 1, "2": 1, "3": 1, "4": 0}
    # At 4096 tokens every baseline holds the whole (tiny) conversation.
    assert all(out["recall"][m]["4096"] == 1.0 for m in ("recency", "bm25", "vector"))
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bench_recall
    finally:
        sys.path.pop(0)
    c = bench_recall.Conversation({"sample_id": "tiny", "conversation": conv, "qa": qa}, 0)
    assert c.turns[0] == "[1 pm on 2 May, 2023] Ann: turn 1 of session 2 [image: a photo of a dog]"
    assert c.turns[-1] == "[1 pm on 3 May, 2023] Ann: turn 3 of session 10"


def test_bench_turn_prints_latency_per_store_size():
    out = run("tools/bench_turn.py", "--sizes", "200,400", "--turns", "5", "--json")
    for size in ("200", "400"):
        assert {"p50_ms", "p99_ms", "rss_mb", "store_mb"} <= out["blocks"][size].keys()


def test_bench_recall_without_data_says_what_to_do(tmp_path: Path):
    proc = subprocess.run([sys.executable, "tools/bench_recall.py", "--data", str(tmp_path / "none.json")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "make_synthetic_locomo.py" in proc.stderr


@pytest.mark.anyio
async def test_bench_recall_vmem_prompt_is_the_one_vmem_ask_packs(tmp_path: Path):
    """The benchmark's vmem figure reads the exact first prompt `Vmem.ask` packs (same bytes)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bench_recall
        from make_synthetic_locomo import conversation
    finally:
        sys.path.pop(0)
    import random

    from vmem import Vmem
    from vmem.actors.retriever import RetrieverActor
    from vmem.bus.rpc import call
    from vmem.schemas.messages import SyncReply, SyncRequest
    from vmem.storage.home import Home

    conv = bench_recall.Conversation(conversation(random.Random(3), 0, 3), 0)
    home = Home.init(tmp_path / "bench")
    retriever = RetrieverActor(home)
    try:
        async with Vmem.open(tmp_path / "ask", create=True) as vm:
            for qi, (question, _cat, _evidence) in enumerate(conv.questions[:2]):
                for budget in (512, 1024):
                    ns = f"t/q{qi}b{budget}"
                    events, _ids = bench_recall.ingest_events(ns, conv)
                    await home.log.append(ns, events)
                    await retriever.sync(SyncRequest(ns=ns))
                    packed, _found = (await bench_recall.vmem_contexts(home, retriever, ns, question, [budget]))[budget]
                    await vm._home.log.append(ns, bench_recall.ingest_events(ns, conv)[0])
                    await call(vm.bus, vm.subjects.request(ns, "retriever", "sync"), SyncRequest(ns=ns), SyncReply, timeout=60)
                    await vm.ask(ns, question, budget=budget)
                    (_seq, first), *_ = await vm.traces(ns, 1)
                    assert first.prompt_sha256 == packed.sha256 and first.prompt_tokens == packed.tokens <= budget
    finally:
        await home.aclose()
