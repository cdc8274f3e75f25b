"""The embedder a namespace was indexed with, recorded beside its indexes.

Why a file in the namespace's index directory, and not an event: the vector
index is derived data, a cache of the log rebuilt from it, and which embedder
built it is a fact about that cache, not about the namespace's history (replay
and the state hash do not depend on it).  An event would also have to be
appended by an actor on the first search of a namespace, turning a read into
a write.  So ``index_dir(ns)/embedder.json`` holds it, written atomically:
the first writer links a complete temporary file into place (``os.link``
fails if another process got there first, so two processes that index a new
namespace at once with different embedders cannot both win), and a re-index
replaces it with ``os.replace``.  Deleting the index directory forgets the
record along with the indexes, and the next process to index the namespace
records its own embedder: that is an explicit re-index too.

Homes indexed before the record existed have none; their vector directories
(``vectors-*/CURRENT``, which name their embedder) stand in for it, so
opening them with another embedder than the one that built them is refused
too, instead of silently starting a second vector index.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from vmem.errors import EmbedderMismatch
from vmem.retrieval.choice import EMBEDDER_ENV, embedder_name
from vmem.retrieval.vectors import VectorIndexError

__all__ = ["EMBEDDER_FILE", "built_with", "check_embedder", "mismatch", "record_embedder", "recorded_embedder"]

EMBEDDER_FILE = "embedder.json"


def recorded_embedder(index_dir: Path) -> str | None:
    """The embedder id recorded in `index_dir`, or None if there is no record."""
    path = index_dir / EMBEDDER_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VectorIndexError(f"{path} is damaged ({exc}); run `vmem reindex` on this namespace to rebuild it") from None
    if not isinstance(data, dict) or not isinstance(data.get("embedder"), str):
        raise VectorIndexError(f"{path} does not name an embedder; run `vmem reindex` on this namespace to rebuild it")
    return data["embedder"]


def record_embedder(index_dir: Path, embedder_id: str, *, replace: bool = False) -> str:
    """Record `embedder_id` for `index_dir`'s namespace, unless one is recorded already (or `replace`).

    Returns the id recorded afterwards: another process's, if it recorded first.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / EMBEDDER_FILE
    tmp = index_dir / f".{EMBEDDER_FILE}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps({"embedder": embedder_id}).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
    finally:
        tmp.unlink(missing_ok=True)
    recorded = recorded_embedder(index_dir)
    assert recorded is not None
    return recorded


def built_with(index_dir: Path) -> list[str]:
    """Embedder ids named by the vector indexes in `index_dir` (homes indexed before records existed)."""
    found = set()
    for current in index_dir.glob("vectors-*/CURRENT"):
        try:
            found.add(json.loads(current.read_bytes())["embedder_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged index is the vector index's to report
    return sorted(found)


def mismatch(ns: str, recorded: str, in_use: str) -> EmbedderMismatch:
    """The error for opening `ns` (indexed with `recorded`) with the embedder `in_use`: what to do about it."""
    use = embedder_name(recorded.split(", ")[0])
    again = embedder_name(in_use)
    keep = (f"pass --embedder {use} (or set {EMBEDDER_ENV}={use})" if use
            else f"open it with the embedder {recorded!r}")
    return EmbedderMismatch(
        f"namespace {ns} was indexed with embedder {recorded!r}, but this process uses {in_use!r}; their vectors "
        f"cannot be compared, so vmem neither mixes them nor re-embeds the namespace unasked. Either {keep}, or "
        f"re-index it with the new one: `vmem reindex --ns {ns}{f' --embedder {again}' if again else ''}`",
        ns=ns, recorded=recorded, in_use=in_use,
    )


def check_embedder(ns: str, index_dir: Path, embedder_id: str, *, record: bool) -> str | None:
    """Check that `ns` (indexes in `index_dir`) may be indexed and searched with `embedder_id`.

    With no record yet, `record` (the namespace holds events: this is its
    first indexing) records `embedder_id`.  Returns the recorded id (None if
    there is none yet); raises :class:`~vmem.errors.EmbedderMismatch` if it is
    another embedder's.
    """
    recorded = recorded_embedder(index_dir)
    if recorded is None:
        built = built_with(index_dir)
        if built and embedder_id not in built:
            raise mismatch(ns, ", ".join(built), embedder_id)
        if not record:
            return None
        recorded = record_embedder(index_dir, embedder_id)
    if recorded != embedder_id:
        raise mismatch(ns, recorded, embedder_id)
    return recorded
