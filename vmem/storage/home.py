"""A vmem home: the directory that holds a deployment's log, store and indexes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vmem.errors import HomeError, UnknownNamespace
from vmem.state.namespace import subject_tokens, validate_namespace
from vmem.storage.block_store import BlockStore
from vmem.storage.lmdb_env import LmdbEnv
from vmem.storage.lmdb_log import LmdbLog
from vmem.storage.log import Log
from vmem.storage.snapshots import Snapshots
from vmem.storage.view import NamespaceView

MARKER = "vmem-home.json"
DEFAULT_HOME = ".vmem"  # relative to the working directory, when neither --home nor $VMEM_HOME says
FORMAT = 1


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """`--home`, else ``$VMEM_HOME``, else :data:`DEFAULT_HOME` in the working directory."""
    if home is not None:
        return Path(home)
    env = os.environ.get("VMEM_HOME")
    return Path(env) if env else Path(DEFAULT_HOME)


class Home:
    """The durable parts of vmem in one directory.

    ``store/`` is one LMDB environment holding the event log (embedded mode),
    the block store, token counts and snapshots; ``index/TENANT/AGENT/`` holds
    the retriever's indexes, which are caches rebuilt from the log.
    """

    def __init__(self, path: Path, env: LmdbEnv, log: Log | None = None) -> None:
        """The home at `path` on its LMDB `env`: embedded (the log in `env`) unless a `log` is given (a cache)."""
        self.path = path
        self.env = env
        self.store = BlockStore(env)
        self.snapshots = Snapshots(env)
        # Embedded, blocks land in the store in the same transaction as the events that carry them.
        self.log: Log = log if log is not None else LmdbLog(env, project=self.store.project_in)
        self.embedded = log is None
        self._views: dict[str, NamespaceView] = {}

    @classmethod
    def init(cls, path: Path) -> "Home":
        """Create a home at `path` (or open the one already there)."""
        path.mkdir(parents=True, exist_ok=True)
        marker = path / MARKER
        if not marker.exists():
            tmp = path / (MARKER + ".tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "kind": "vmem-home"}) + "\n")
            os.replace(tmp, marker)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path, *, log: Log | None = None) -> "Home":
        """Open an existing home; HomeError if it is missing or damaged."""
        marker = path / MARKER
        if not marker.is_file():
            raise HomeError(
                f"no vmem home at {path}: run `vmem init --home {path}` first "
                f"(or set --home / VMEM_HOME to an existing home)"
            )
        try:
            meta = json.loads(marker.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, this vmem reads {FORMAT}")
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise HomeError(f"the home at {path} is damaged ({MARKER}: {exc}); restore it from a backup") from None
        if log is None and (path / "vmem-cache.json").is_file():
            # Written by vmem.service.distributed: this directory caches a JetStream log,
            # whose sequences are not the embedded log's.
            raise HomeError(
                f"{path} is the cache of a distributed (NATS JetStream) deployment, not an embedded home: "
                f"use the --nats commands with it, or another --home"
            )
        store_dir = path / "store"
        if store_dir.exists() and not (store_dir / "data.mdb").is_file():
            raise HomeError(f"the home at {path} is damaged (store/data.mdb is missing); restore it from a backup")
        return cls(path, LmdbEnv(store_dir, durable=log is None), log)

    def view(self, ns: str) -> NamespaceView:
        """The live state of `ns` (shared by every actor of this process)."""
        validate_namespace(ns)
        view = self._views.get(ns)
        if view is None:
            view = self._views[ns] = NamespaceView(ns, self.log, self.store, self.snapshots)
        return view

    async def require_namespace(self, ns: str) -> NamespaceView:
        """The caught-up view of `ns`; UnknownNamespace if it has no events (naming its tenant's others only)."""
        view = self.view(ns)
        await view.catch_up()
        if view.pos == 0:
            tenant = ns.split("/")[0]
            known = [n for n in await self.log.namespaces() if n.split("/")[0] == tenant]
            hint = f"known: {', '.join(known)}" if known else f"tenant {tenant} has none yet"
            raise UnknownNamespace(f"namespace {ns!r} has no events ({hint}); ingest into it first")
        return view

    def index_dir(self, ns: str) -> Path:
        tenant, agent = subject_tokens(ns)
        return self.path / "index" / tenant / agent

    async def aclose(self) -> None:
        """Close the log and the store."""
        await self.log.aclose()
        self.env.close()
