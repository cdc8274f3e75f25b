"""`Vmem`: the public API with its two ways in, embedded and distributed.

``Vmem.open(path)`` hosts every actor in this process on an in-process bus,
with the log in LMDB (embedded mode: nothing to start).  ``Vmem.connect(url)``
reaches the actors of ``vmem serve`` over NATS with a URL and credentials,
nothing else (distributed mode: no JetStream rights, no local store).  Either
way the object is the same client (:class:`vmem.client.client.Client`), so code
written against one runs against the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from vmem.actors.hosting import build_actors
from vmem.actors.retriever import DEFAULT_TIMEOUT_S
from vmem.actors.runtime import Report
from vmem.bus.local import LocalBus
from vmem.bus.subjects import DEFAULT_PREFIX, Subjects
from vmem.client.client import Client
from vmem.models.model import Model
from vmem.nats.bus import NatsBus
from vmem.nats.connection import require_asyncio
from vmem.paging.select import Policy
from vmem.retrieval.embed import Embedder
from vmem.retrieval.fusion import DEFAULT_POLICY, FusionPolicy
from vmem.retrieval.retrievers import Retriever
from vmem.storage.home import Home


class Vmem(Client):
    """A handle on vmem: embedded (:meth:`open`) or connected to a deployment (:meth:`connect`)."""

    _home: Home | None = None  # embedded only: for tests and tools that look inside (they never append)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        retrievers: Sequence[Retriever] = (),
        policy: Policy = "score",
        fusion: FusionPolicy = DEFAULT_POLICY,
        retriever_timeout_s: float = DEFAULT_TIMEOUT_S,
        embedder: Embedder | None = None,
        summariser: Model | None = None,
        report: Report | None = None,
    ) -> AsyncIterator["Vmem"]:
        """Open the home at `path` (``create=True`` to initialise it) and run its actors in this process.

        `retrievers` are plugins run beside the built-in ones; `policy` is the
        pager's eviction policy ("score" or "lru"); `fusion` weighs retrievers;
        `embedder` embeds blocks for vector retrieval (default:
        :func:`vmem.default_embedder`: ``$VMEM_EMBEDDER``, else all-MiniLM-L6-v2
        when its files are installed, else feature hashing; a namespace keeps
        the embedder it was first indexed with, see :meth:`Client.reindex`);
        `summariser` is a model for abstractive conversation summaries (default:
        the deterministic extractive compressor); `report` hears of internal
        errors (default: a JSON line on stderr).
        """
        home = Home.init(Path(path)) if create else Home.open(Path(path))
        try:
            async with LocalBus() as bus:
                hosted = build_actors(
                    home, bus, retrievers=retrievers, policy=policy, fusion=fusion,
                    retriever_timeout_s=retriever_timeout_s, embedder=embedder, summariser=summariser,
                )
                async with hosted.runtime(bus, report=report).running():
                    vm = cls(bus)
                    vm._home = home
                    yield vm
        finally:
            await home.aclose()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        user: str | None = None,
        password: str | None = None,
        creds: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 30.0,
        **options: Any,
    ) -> AsyncIterator["Vmem"]:
        """Connect to a deployment's NATS server as a tenant: the actors are ``vmem serve``'s.

        `user` and `password` (or a `creds` file) are the tenant's NATS
        credentials; `prefix` is the deployment's subject prefix; `options` go
        to :meth:`vmem.nats.connection.NatsConnection.connect`.  asyncio only (nats-py).
        """
        require_asyncio("vmem's distributed mode")
        subjects = Subjects(prefix)
        async with await NatsBus.connect(url, name="vmem client", user=user, password=password, creds=creds, **options) as bus:
            yield cls(bus, timeout=timeout, subjects=subjects)


connect = Vmem.connect
