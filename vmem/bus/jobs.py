"""Where compressor jobs go: an interface with one implementation per deployment.

Embedded, a job is a request to the compressor actor's queue group; with
NATS, it goes through a JetStream work queue (:mod:`vmem.nats.jobs`) so
that a job taken by a worker that dies is redelivered to another.  Either way
the job's commit carries the idempotency key ``compress:<job id>``, so it
produces exactly one summary.
"""

from __future__ import annotations

from typing import Protocol

from vmem.schemas.messages import CompressDone, CompressJob


class JobQueue(Protocol):
    async def submit(self, job: CompressJob, *, timeout: float = 60.0) -> CompressDone:
        """Run `job` on some compressor worker and return its result."""
        ...
