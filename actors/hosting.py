"""The actors one runtime hosts, built and wired the same way for every host.

``Vmem.open`` (embedded), ``vmem serve`` and the benchmarks all build their
actors here, so they stay the same set, configured the same way: one
:class:`~vmem.actors.writer.Writer` (the only path to the log) and one
:class:`~vmem.actors.runtime.Caller` (calls between actors of this process
skip the bus) shared by all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import msgspec

from vmem.actors.compressor import Compressor
from vmem.actors.memory import Memory
from vmem.actors.packer import Packer
from vmem.actors.pager import Pager
from vmem.actors.reader import Reader
from vmem.actors.reducer import Reducer
from vmem.actors.retriever import DEFAULT_TIMEOUT_S, RetrieverActor
from vmem.actors.runtime import Actor, ActorRuntime, Caller, Report
from vmem.actors.writer import Writer
from vmem.bus.bus import Bus
from vmem.bus.jobs import JobQueue
from vmem.bus.subjects import Subjects
from vmem.errors import RequestTimeout
from vmem.models.model import Model
from vmem.paging.select import Policy
from vmem.retrieval.embed import Embedder
from vmem.retrieval.fusion import DEFAULT_POLICY, FusionPolicy
from vmem.retrieval.retrievers import Retriever
from vmem.schemas.messages import CompressDone, CompressJob
from vmem.storage.home import Home


class CallerJobs:
    """Compressor jobs as requests to the compressor actor (in this process, or its queue group on the bus)."""

    def __init__(self, caller: Caller) -> None:
        self.call = caller

    async def submit(self, job: CompressJob, *, timeout: float = 60.0) -> CompressDone:
        """See :meth:`vmem.bus.jobs.JobQueue.submit`; a job run in this process is cancelled at the timeout."""
        # The caller runs a compressor of this process directly, without the
        # bus request's timeout: the queue's promise needs one of its own.
        with anyio.move_on_after(timeout):
            try:
                return await self.call(job.ns, "compressor", "job", job, CompressDone, timeout=timeout)
            except RequestTimeout:
                pass  # the bus's, saying less than this one
        raise RequestTimeout(f"compress job {job.job_id}: no compressor finished it within {timeout} s")


class Hosted(msgspec.Struct):
    """A runtime's actors, with the writer and caller they share."""

    actors: list[Actor]
    writer: Writer
    caller: Caller
    compressor: Compressor | None

    def runtime(self, bus: Bus, *, namespaces: Sequence[str] = ("*/*",), report: Report | None = None) -> ActorRuntime:
        return ActorRuntime(bus, self.actors, subjects=self.caller.subjects, namespaces=namespaces, caller=self.caller,
                            report=report, record=self.writer.record_error)


def build_actors(
    home: Home,
    bus: Bus,
    *,
    jobs: JobQueue | None = None,
    compressor: bool = True,
    retrievers: Sequence[Retriever] = (),
    policy: Policy = "score",
    fusion: FusionPolicy = DEFAULT_POLICY,
    retriever_timeout_s: float = DEFAULT_TIMEOUT_S,
    embedder: Embedder | None = None,
    summariser: Model | None = None,
    subjects: Subjects | None = None,
) -> Hosted:
    """Pager, retriever, packer, reducer, memory and reader (and a compressor) for one runtime.

    Without `jobs`, compressor jobs are requests to the compressor actor;
    `vmem serve` passes the JetStream work queue and hosts no compressor.
    """
    subjects = subjects or Subjects()
    writer = Writer(home, bus, subjects)
    caller = Caller(bus, subjects)
    jobs = jobs if jobs is not None else CallerJobs(caller)
    actors: list[Actor] = [
        Pager(home, writer, caller, jobs, policy=policy),
        RetrieverActor(home, plugins=retrievers, policy=fusion, timeout_s=retriever_timeout_s, embedder=embedder),
        Packer(home, writer),
        Reducer(home, writer, caller),
        Memory(home, writer, caller),
        Reader(home),
    ]
    comp = Compressor(home, writer, model=summariser) if compressor else None
    if comp is not None:
        actors.append(comp)
    return Hosted(actors=actors, writer=writer, caller=caller, compressor=comp)
