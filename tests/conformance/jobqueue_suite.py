"""Conformance tests every :class:`vmem.bus.jobs.JobQueue` must pass.

Subclass :class:`JobQueueConformance` in a test module that provides a
``queue`` fixture (a :class:`QueueUnderTest`) and an ``anyio_backend``
fixture.  Behind the queue runs the real compressor actor, over a home whose
namespace :data:`NS` holds the pages :func:`seed` wrote, with a
:class:`StallingModel` as its summariser: jobs of scope ``"pages"`` are
summarised at once, jobs of scope ``"conversation"`` never finish, which is
how the tests make a worker too slow.  The tests use only ``submit``, and
read what was committed from the home's log.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import pytest

from vmem.bus.jobs import JobQueue
from vmem.errors import BusError, RequestTimeout, UnknownBlock
from vmem.models.model import ModelReply, ToolSpec
from vmem.schemas.events import SummaryCommitted
from vmem.schemas.messages import ChatMessage, CompressDone, CompressJob
from vmem.state.blocks import make_block
from vmem.storage.log import Log, read_all

NS = "acme/jobs"
# Generous: only a broken queue comes near it, and it turns a hang into a failure.
DEADLINE = 20.0
SHORT = 0.5  # the timeout a test expects to run out
_ids = itertools.count()


class StallingModel:
    """A summariser that never answers: conversation jobs hang, as behind a stuck provider."""

    name = "stalling"

    async def complete(
        self, prompt: str, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> ModelReply:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


async def seed(log: Log, pages: int = 6) -> list[str]:
    """Pages in :data:`NS` for jobs to summarise; their block ids."""
    blocks = [
        make_block(NS, "page", "document", f"Page {i}. The keeper of station {i} logs the weather at dawn.", {"page": str(i)})
        for i in range(pages)
    ]
    await log.append(NS, blocks, key="seed")
    return [b.block_id for b in blocks]


@dataclass
class QueueUnderTest:
    jobs: JobQueue  # served by a compressor worker
    idle: JobQueue  # of the same kind, with no worker behind it
    log: Log  # where the worker commits
    sources: list[str]  # page ids in NS, from :func:`seed`
    close: Callable[[], Awaitable[None]]  # closes the bus or connection under `jobs` (and `idle`)

    def job(self, *sources: str, scope: str = "pages") -> CompressJob:
        picked = sources or tuple(self.sources[:2])
        return CompressJob(ns=NS, job_id=f"evict:conf{next(_ids)}", sources=picked, turn=1, scope=scope)  # type: ignore[arg-type]

    async def summaries(self, job_id: str) -> list[str]:
        """Ids of the summaries committed for `job_id`."""
        return [
            s.event.summary_id
            async for batch in read_all(self.log, NS)
            for s in batch
            if isinstance(s.event, SummaryCommitted) and s.event.job_id == job_id
        ]


class JobQueueConformance:
    """The behaviour shared by every JobQueue; subclass it with a ``queue`` fixture."""

    pytestmark = pytest.mark.anyio

    async def test_submit_returns_the_jobs_result(self, queue: QueueUnderTest) -> None:
        job = queue.job()
        with anyio.fail_after(DEADLINE):
            done = await queue.jobs.submit(job, timeout=DEADLINE)
        assert isinstance(done, CompressDone)
        assert done.job_id == job.job_id and done.summary_id and not done.duplicate
        assert await queue.summaries(job.job_id) == [done.summary_id]

    async def test_different_jobs_get_different_summaries(self, queue: QueueUnderTest) -> None:
        with anyio.fail_after(DEADLINE):
            one = await queue.jobs.submit(queue.job(*queue.sources[:2]), timeout=DEADLINE)
            two = await queue.jobs.submit(queue.job(*queue.sources[2:4]), timeout=DEADLINE)
        assert one.summary_id != two.summary_id

    async def test_a_job_submitted_again_commits_nothing_new(self, queue: QueueUnderTest) -> None:
        job = queue.job()
        with anyio.fail_after(DEADLINE):
            first = await queue.jobs.submit(job, timeout=DEADLINE)
            again = await queue.jobs.submit(job, timeout=DEADLINE)
        assert again == CompressDone(job_id=job.job_id, summary_id=first.summary_id, duplicate=True)
        assert await queue.summaries(job.job_id) == [first.summary_id]

    async def test_a_job_submitted_twice_at_once_commits_one_summary(self, queue: QueueUnderTest) -> None:
        job = queue.job(*queue.sources[1:4])
        results: list[CompressDone] = []

        async def submit() -> None:
            results.append(await queue.jobs.submit(job, timeout=DEADLINE))

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(submit)
        assert len({r.summary_id for r in results}) == 1
        assert sorted(r.duplicate for r in results) == [False, True, True]
        assert await queue.summaries(job.job_id) == [results[0].summary_id]

    async def test_a_refused_job_raises_the_workers_typed_error(self, queue: QueueUnderTest) -> None:
        with anyio.fail_after(DEADLINE), pytest.raises(UnknownBlock, match="not in acme/jobs"):
            await queue.jobs.submit(queue.job("0" * 32), timeout=DEADLINE)

    async def test_no_result_in_time_is_a_request_timeout(self, queue: QueueUnderTest) -> None:
        stuck = queue.job(scope="conversation")
        start = anyio.current_time()
        with anyio.fail_after(DEADLINE), pytest.raises(RequestTimeout, match=stuck.job_id):
            await queue.jobs.submit(stuck, timeout=SHORT)
        assert anyio.current_time() - start < SHORT + 5  # the timeout, not the deadline
        # The queue still works for the next job.
        with anyio.fail_after(DEADLINE):
            assert (await queue.jobs.submit(queue.job(), timeout=DEADLINE)).summary_id

    async def test_with_no_worker_submit_raises_a_bus_error(self, queue: QueueUnderTest) -> None:
        with anyio.fail_after(DEADLINE), pytest.raises(BusError):
            await queue.idle.submit(queue.job(), timeout=SHORT)

    async def test_once_closed_submit_raises_a_bus_error_at_once(self, queue: QueueUnderTest) -> None:
        with anyio.fail_after(DEADLINE):
            await queue.jobs.submit(queue.job(), timeout=DEADLINE)
        await queue.close()
        await queue.close()  # closing twice is harmless
        for jobs in (queue.jobs, queue.idle):
            # A long timeout: a queue that waited for it would fail the deadline.
            with anyio.fail_after(5), pytest.raises(BusError):
                await jobs.submit(queue.job(), timeout=DEADLINE * 10)
