"""Shared fixtures: a sample document, and both async backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmem.client.sample import handbook

# The default embedder is the best one installed: MiniLM when its files are
# there, which indexes about 50 times slower than feature hashing.  Tests that
# do not care which embedder runs pin hashing, and so do the vmem processes
# they start (they inherit the environment); tests of the choice itself set
# or delete the variable with monkeypatch.
os.environ["VMEM_EMBEDDER"] = "hashing"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(scope="session")
def handbook_text() -> str:
    return handbook()


@pytest.fixture
def handbook_file(tmp_path: Path, handbook_text: str) -> Path:
    path = tmp_path / "handbook.md"
    path.write_text(handbook_text, encoding="utf-8")
    return path
