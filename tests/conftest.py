"""Shared fixtures: a sample document, and both async backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmem.client.sample import handbook


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
