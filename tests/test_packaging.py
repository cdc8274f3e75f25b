"""Packaging: the built wheel carries actors/ and schemas/ as vmem subpackages, and runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import vmem

ROOT = Path(__file__).resolve().parent.parent


PUBLIC = [
    "AccessDenied", "ActorError", "AgentTool", "AnthropicModel", "AskResult", "BudgetError", "Bus", "BusError",
    "ChatResult", "Client", "ConcurrencyConflict", "CorruptRecord", "Embedder", "EmbedderMismatch", "Event", "EvictReply", "FaultReply",
    "FusionPolicy", "HashingEmbedder", "HomeError", "IngestResult", "InputError", "InvalidNamespace", "LogError",
    "MiniLMEmbedder", "Model", "ModelError", "ModelProfile", "ModelReply", "Msg", "NoResponders", "OfflineModel",
    "OpenAIChatModel", "OpenAIEmbedder", "PackReply", "PinReply", "ReduceReply", "ReplayReport", "RequestTimeout",
    "RetrievalContext", "RetrievalQuery", "Retriever", "SchemaError", "SearchReply", "Slot", "Snapshot", "State",
    "StateReply", "StepOutcome", "StoredEvent", "Subscription", "Tokenizer", "ToolSpec", "TraceDiff", "UnknownBlock",
    "UnknownNamespace", "UnknownTurn", "UsageError", "Vmem", "VmemError", "calculator_tool", "connect", "default_embedder", "fold",
    "get_profile", "get_tokenizer", "model_from_env", "profile_for_budget", "sample_handbook", "state_hash",
    "validate_namespace",
]
SUBPACKAGES = ["actors", "agent", "assembly", "bus", "cli", "client", "errors", "models", "nats", "paging",
               "retrieval", "schemas", "service", "state", "storage"]


def test_the_public_names_are_exactly_these():
    """A literal list: a name leaves or joins the public API only by changing this test."""
    assert sorted(vmem.__all__) == PUBLIC
    # Anything else on the package is a subpackage (imported by now), never a stray name.
    assert {n for n in dir(vmem) if not n.startswith("_")} - set(PUBLIC) <= set(SUBPACKAGES)


def test_the_built_wheel_imports_and_runs(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("vmem-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vmem/actors/pager.py" in names and "vmem/schemas/events.py" in names
    assert {f"vmem/{p}/__init__.py" for p in SUBPACKAGES if p != "errors"} <= set(names)
    assert "vmem/schemas/golden/events-2026-11.msgpack" in names
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    code = (
        "import vmem, vmem.actors.pager, vmem.schemas.events, sys;"
        f"assert vmem.__file__.startswith({str(unpacked)!r}), vmem.__file__;"
        "from vmem.cli import main; sys.exit(main(['demo', '--help']))"
    )
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage: vmem demo" in proc.stdout
