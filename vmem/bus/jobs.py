"""Where compressor jobs go: an interface with one implementation per deployment.

Embedded, a job is a request to the compressor actor's queue group; with
NATS, it goes through a JetStream work queue (:mod:`vmem.nats.jobs`) so
that a job taken by a worker that dies is redelivered to another.  Either way
the job's commit carries the idempotency key ``compress:<job id>``, so it
produces exactly one summary.  ``tests/conformance/jobqueue_suite.py`` checks
what every queue promises.
"""

from __future__ import annotations

from typing import Protocol

from vmem.schemas.messages import CompressDone, CompressJob


class JobQueue(Protocol):
    """Hands compressor jobs to workers and waits for their results."""

    async def submit(self, job: CompressJob, *, timeout: float = 60.0) -> CompressDone:
        """Run `job` on some compressor worker and return its result.

        Submitting a job id again, even while the first is running, commits
        nothing new: the result names the same summary, with
        ``duplicate=True``.  A worker's refusal raises its typed error (an
        unknown source block is :class:`~vmem.errors.UnknownBlock`).  No
        result within `timeout` seconds is
        :class:`~vmem.errors.RequestTimeout`; the job may or may not have
        run, and submitting it again is safe.  With no worker, or once the
        bus or connection under the queue is closed, submit raises a
        :class:`~vmem.errors.BusError`, and never later than `timeout`.
        """
        ...
