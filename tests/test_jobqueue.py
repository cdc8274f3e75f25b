"""Both job queues against the shared JobQueue conformance suite.

CallerJobs (the embedded runtime's) runs under asyncio and trio, with the
compressor in the submitter's process and behind a bus; JetStreamJobQueue
(``vmem serve``'s) runs on a real nats-server, under asyncio only (nats-py),
with an in-process worker serving the work queue.  Redelivery after a worker
dies, poison jobs and slow workers are tested in test_distributed.py.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskStatus
from conformance.jobqueue_suite import JobQueueConformance, QueueUnderTest, StallingModel, seed
from natsserver import NatsServer, nats_server  # noqa: F401 - fixture

from vmem.actors.compressor import Compressor
from vmem.actors.hosting import CallerJobs
from vmem.actors.runtime import ActorRuntime, Caller
from vmem.actors.writer import Writer
from vmem.bus.local import LocalBus
from vmem.bus.subjects import Subjects
from vmem.nats.connection import NatsConnection
from vmem.nats.jobs import JetStreamJobQueue
from vmem.storage.home import Home

_prefixes = itertools.count()


class TestCallerJobsConformance(JobQueueConformance):
    """The suite with the compressor called directly (in-process) and over a LocalBus."""

    @pytest.fixture(params=["in-process", "over-the-bus"])
    async def queue(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueUnderTest]:
        home = Home.init(tmp_path / "home")
        try:
            async with LocalBus() as bus, LocalBus() as empty_bus, anyio.create_task_group() as tg:
                subjects = Subjects()
                caller = Caller(bus, subjects)
                compressor = Compressor(home, Writer(home, bus, subjects), concurrency=2, model=StallingModel())
                # Without the runtime's caller, every job goes over the bus.
                hosted_by = caller if request.param == "in-process" else None
                runtime = ActorRuntime(bus, [compressor], subjects=subjects, caller=hosted_by)
                stop, stopped = anyio.Event(), anyio.Event()

                async def host(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                    try:
                        async with runtime.running():
                            task_status.started()
                            await stop.wait()
                    finally:
                        stopped.set()

                async def close() -> None:
                    stop.set()
                    await stopped.wait()
                    await bus.aclose()
                    await empty_bus.aclose()

                await tg.start(host)
                yield QueueUnderTest(
                    jobs=CallerJobs(caller),
                    idle=CallerJobs(Caller(empty_bus, subjects)),
                    log=home.log,
                    sources=await seed(home.log),
                    close=close,
                )
                stop.set()
        finally:
            await home.aclose()


class TestJetStreamJobQueueConformance(JobQueueConformance):
    """The suite through a JetStream work queue, the worker on a connection of its own."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def queue(self, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[QueueUnderTest]:
        prefix = f"jq{os.getpid()}-{next(_prefixes)}"
        home = Home.init(tmp_path / "worker")
        worker_conn = await NatsConnection.connect(nats_server.url)
        conn = await NatsConnection.connect(nats_server.url)
        try:
            async with LocalBus() as bus, anyio.create_task_group() as tg:
                worker = JetStreamJobQueue(worker_conn, prefix=prefix)
                compressor = Compressor(home, Writer(home, bus, Subjects(prefix)), model=StallingModel())
                await worker.ensure()
                tg.start_soon(partial(worker.serve, compressor.job, concurrency=2))
                yield QueueUnderTest(
                    jobs=JetStreamJobQueue(conn, prefix=prefix),
                    idle=JetStreamJobQueue(conn, prefix=f"{prefix}-idle"),
                    log=home.log,
                    sources=await seed(home.log),
                    close=conn.aclose,
                )
                tg.cancel_scope.cancel()
        finally:
            await conn.aclose()
            await worker_conn.aclose()
            await home.aclose()
