"""The CLI: help everywhere, stable JSON, and bad input refused clearly with nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NS = "acme/agent7"


def vmem(*args: str, home: Path | None = None, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vmem.cli", *([f"--home={home}"] if home else []), *args]
    env = {k: v for k, v in os.environ.items() if k != "VMEM_HOME"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    vmem("init", home=h, check=True)
    return h


@pytest.fixture
def loaded(home: Path, handbook_file: Path) -> Path:
    vmem("ingest", str(handbook_file), "--ns", NS, home=home, check=True)
    return home


def events_of(home: Path) -> int:
    proc = vmem("log", "tail", "-n", "10000", "--ns", NS, "--json", home=home)
    return len(proc.stdout.splitlines()) if proc.returncode == 0 else 0


@pytest.mark.parametrize(
    "argv",
    [[], ["init"], ["ingest"], ["reindex"], ["ask"], ["show"], ["trace"], ["trace", "show"], ["trace", "diff"], ["log"], ["log", "tail"],
     ["replay"], ["demo"], ["chat"], ["handoff"], ["handoff", "export"], ["handoff", "import"], ["grant"], ["revoke"],
     ["slot"], ["slot", "set"]],
)
def test_every_command_has_help(argv):
    proc = vmem(*argv, "--help")
    assert proc.returncode == 0 and "usage: vmem" in proc.stdout


def test_ask_json_has_the_documented_fields(loaded: Path):
    proc = vmem("ask", "What is the radio callsign of Gannet Point station?", "--ns", NS, "--budget", "1024",
                "--model", "offline", "--json", home=loaded, check=True)
    out = json.loads(proc.stdout)
    assert {"answer", "cited", "faults", "evictions", "turn", "prompt_sha256", "prompt_tokens"} <= out.keys()
    assert "GAN100" in out["answer"] and out["faults"] >= 1 and out["prompt_tokens"] <= 1024


def test_replay_json_reports_equal(loaded: Path):
    vmem("ask", "Who is the principal keeper of Cape Wrath?", "--ns", NS, "--budget", "800", home=loaded, check=True)
    out = json.loads(vmem("replay", "--ns", NS, "--verify", "--json", home=loaded, check=True).stdout)
    assert out["equal"] is True and out["state_hash"] == out["live_state_hash"] and out["events"] > 0


def test_trace_show_and_log_tail_and_show(loaded: Path):
    ask = json.loads(vmem("ask", "When was Ailsa Craig lighthouse first lit?", "--ns", NS, "--budget", "900", "--json", home=loaded, check=True).stdout)
    traces = json.loads(vmem("trace", "show", "1", "--ns", NS, "--json", home=loaded, check=True).stdout)
    assert traces[-1]["trace"]["prompt_sha256"] == ask["prompt_sha256"]
    shown = json.loads(vmem("show", ask["cited"][0], "--ns", NS, "--json", home=loaded, check=True).stdout)
    assert "Ailsa Craig" in shown["text"]
    assert "turn_ended" in vmem("log", "tail", "--ns", NS, home=loaded, check=True).stdout


def test_trace_show_prompt_prints_what_the_model_saw_checked_against_its_sha256(loaded: Path):
    ask = json.loads(vmem("ask", "Who is the principal keeper of Cape Wrath?", "--ns", NS, "--budget", "900", "--json",
                          home=loaded, check=True).stdout)
    shown = vmem("trace", "show", str(ask["turn"]), "--prompt", "--ns", NS, home=loaded, check=True)
    assert "Who is the principal keeper of Cape Wrath?" in shown.stdout and "<System>" in shown.stdout
    assert f"sha256 {ask['prompt_sha256']} matches" in shown.stderr
    reply = json.loads(vmem("trace", "show", str(ask["turn"]), "--prompt", "--ns", NS, "--json", home=loaded, check=True).stdout)
    assert reply["equal"] and reply["sha256"] == reply["recorded_sha256"] == ask["prompt_sha256"]
    assert reply["prompt"] + "\n" == shown.stdout and reply["tokens"] == ask["prompt_tokens"]


def _refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert proc.stderr.startswith("vmem: error: ")
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (b"", ("empty",)),
        (b"   \n\n\t\n", ("only whitespace", "nothing to ingest")),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("binary",)),
        (b"caf\xc3\xa9 ok then \xff\xfe broken", ("UTF-8", "offset 14")),
    ],
)
def test_bad_files_are_refused_and_nothing_committed_is_lost(loaded: Path, tmp_path: Path, content: bytes, needles):
    before = events_of(loaded)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    _refused(vmem("ingest", str(bad), "--ns", NS, home=loaded), *needles)
    assert events_of(loaded) == before
    assert json.loads(vmem("replay", "--ns", NS, "--json", home=loaded, check=True).stdout)["equal"]


def test_a_file_over_the_limit_is_refused_naming_the_limit(home: Path, handbook_file: Path):
    _refused(vmem("ingest", str(handbook_file), "--ns", NS, "--max-bytes", "1000", home=home), "1000", "--max-bytes")


def test_a_missing_file_is_named(home: Path, tmp_path: Path):
    _refused(vmem("ingest", str(tmp_path / "nope.md"), "--ns", NS, home=home), "nope.md")


@pytest.mark.parametrize("ns", ["bad.ns*", "acme agent", "acme", "a/b/c", "acme/>"])
def test_invalid_namespaces_are_refused(home: Path, handbook_file: Path, ns: str):
    _refused(vmem("ingest", str(handbook_file), "--ns", ns, home=home), "invalid namespace", "TENANT/AGENT")


def test_unknown_namespace_on_ask(loaded: Path):
    _refused(vmem("ask", "hi?", "--ns", "acme/nobody", "--budget", "512", home=loaded), "acme/nobody", "has no events")


def test_missing_home(tmp_path: Path):
    _refused(vmem("ask", "hi?", "--ns", NS, "--budget", "512", home=tmp_path / "nowhere"), "no vmem home", "vmem init")


def test_corrupted_home_marker(home: Path):
    (home / "vmem-home.json").write_text("{not json")
    _refused(vmem("replay", "--ns", NS, home=home), "damaged")


def test_corrupted_store_file(home: Path):
    (home / "store" / "data.mdb").write_bytes(b"\x00garbage" * 1000)
    _refused(vmem("replay", "--ns", NS, home=home), "cannot open the store")


def test_a_corrupted_log_record_is_named_by_sequence(loaded: Path):
    from vmem.storage.lmdb_log import LmdbLog

    log = LmdbLog.open(loaded / "store")
    raw = bytearray(log.raw_record(NS, 5))
    raw[-3] ^= 0x40
    log.put_raw_record(NS, 5, bytes(raw))
    log.close()
    _refused(vmem("replay", "--ns", NS, home=loaded), "sequence 5", "corrupt")


def test_budget_too_small_is_refused(loaded: Path):
    _refused(vmem("ask", "Who keeps Cape Wrath?", "--ns", NS, "--budget", "60", home=loaded), "budget")


def test_two_processes_ingesting_into_one_home_both_commit(home: Path, tmp_path: Path, handbook_text: str):
    files = []
    for i in range(2):
        f = tmp_path / f"doc{i}.md"
        f.write_text(f"# Copy {i}\n\n" + handbook_text * 3, encoding="utf-8")
        files.append(f)
    cmd = [sys.executable, "-m", "vmem.cli", f"--home={home}", "ingest", "--json"]
    procs = [subprocess.Popen([*cmd, str(f), "--ns", NS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    pages = sum(json.loads(o[0])["pages"] for o in outs)
    report = json.loads(vmem("replay", "--ns", NS, "--verify", "--json", home=home, check=True).stdout)
    assert report["equal"]
    assert events_of(home) == report["events"] and report["events"] >= pages
    # Both documents are searchable: the index caught up with both writers.
    ask = json.loads(vmem("ask", "Who is the principal keeper of Cape Wrath?", "--ns", NS, "--budget", "900", "--json", home=home, check=True).stdout)
    assert ask["cited"]


def _chat(home: Path, ns: str, lines: str) -> list[str]:
    cmd = [sys.executable, "-m", "vmem.cli", f"--home={home}", "chat", "--ns", ns, "--when", "2026-05-01T12:00:00Z"]
    proc = subprocess.run(cmd, input=lines, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_chat_answers_one_line_per_input_line_and_remembers_across_processes(home: Path):
    first = _chat(home, "acme/alice", "Hello there.\nMy name is Ada Lovelace.\nWhat is 12 * (3 + 4)?\n")
    assert first == ["Noted.", "Got it. I will remember that.", "12 * (3 + 4) = 84"]
    second = _chat(home, "acme/alice", "What is my name?\n")  # a new process
    assert second == ["From my notes: Name: Ada Lovelace"]


def test_handoff_through_the_cli_and_the_grant_rule(home: Path, tmp_path: Path):
    _chat(home, "acme/alice", "My name is Ada Lovelace.\n")
    snap = tmp_path / "snap.json"
    snap.write_text(vmem("handoff", "export", "--ns", "acme/alice", home=home, check=True).stdout)
    assert json.loads(snap.read_text())["source_ns"] == "acme/alice"
    vmem("handoff", "import", str(snap), "--ns", "acme/bob", home=home, check=True)
    assert _chat(home, "acme/bob", "What is my name?\n") == ["From my notes: Name: Ada Lovelace"]
    _refused(vmem("handoff", "import", str(snap), "--ns", "globex/carol", home=home), "crosses tenants", "vmem grant")
    vmem("grant", "--tenant", "acme", "--to", "globex", home=home, check=True)
    vmem("handoff", "import", str(snap), "--ns", "globex/carol", home=home, check=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    _refused(vmem("handoff", "import", str(bad), "--ns", "acme/bob", home=home), "not a vmem hand-off snapshot")


def test_show_takes_the_short_id_a_prompt_shows(loaded: Path):
    ask = json.loads(vmem("ask", "When was Ailsa Craig lighthouse first lit?", "--ns", NS, "--budget", "900", "--json", home=loaded, check=True).stdout)
    short = ask["cited"][0][:12]
    assert short in ask["answer"]
    shown = json.loads(vmem("show", short, "--ns", NS, "--json", home=loaded, check=True).stdout)
    assert shown["block_id"] == ask["cited"][0]
