"""Compressor jobs through a JetStream work queue: redelivered if a worker dies, committed once.

The stream ``VMEM-JOBS`` (work-queue retention, file storage) holds jobs
published to ``vmem.<tenant>.<agent>.compressor.job``; the durable pull
consumer ``compressors`` is the queue group: every worker process, on any
machine, pulls from it, so each job goes to one worker at a time.  A worker
pulls one job per slot (``--concurrency``), so a slow worker holds only the
jobs it is running and never starves the others.

A job is acknowledged only after its summary is committed to the log, and
then its result is sent to the submitter's inbox (the ``Vmem-Reply``
header).  If a worker dies first, the job is redelivered after ``ack_wait``
(a worker running a long job says "in progress" every ``ack_wait / 3``, so a
slow job is not taken from it).  The commit carries the idempotency key
``compress:<job id>``, so a job run twice (a crash after the commit and before
the acknowledgement) still yields exactly one summary; the second run answers
``duplicate=True``.

asyncio only (nats-py); see :mod:`vmem.nats.bus`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from nats import errors as nats_errors
from nats.aio.msg import Msg as NatsMsg
from nats.js import errors as js_errors

from vmem.bus.bus import answerable
from vmem.bus.subjects import DEFAULT_PREFIX, Subjects
from vmem.errors import (
    BusError,
    ConcurrencyConflict,
    CorruptRecord,
    LogError,
    RequestTimeout,
    SchemaError,
    UsageError,
    VmemError,
    from_reply,
)
from vmem.nats.admin import JetStreamAdmin
from vmem.nats.connection import NatsConnection
from vmem.schemas.codec import decode, encode
from vmem.schemas.messages import CompressDone, CompressJob, ErrorReply, Reply

__all__ = ["CONSUMER", "JetStreamJobQueue", "JobEvent", "jobs_stream_name"]

CONSUMER = "compressors"
REPLY_HEADER = "Vmem-Reply"
FETCH_WAIT = 5.0

Handler = Callable[[CompressJob], Awaitable[CompressDone]]
DeadLetter = Callable[[CompressJob, str, int], Awaitable[None]]
DEAD_AFTER = 5
"""Deliveries after which a job that keeps failing is given up (dead-lettered)."""
JobEvent = Callable[[dict[str, Any]], None]


def jobs_stream_name(prefix: str = DEFAULT_PREFIX) -> str:
    """``VMEM-JOBS`` for the default prefix (a '-' no tenant stream ``VMEM_<tenant>`` has)."""
    return f"{prefix.upper()}-JOBS"


def _transient(exc: BaseException) -> bool:
    """Worth a redelivery: the log or the bus was briefly unavailable."""
    if isinstance(exc, (ConcurrencyConflict, CorruptRecord)):
        return False
    return isinstance(exc, (LogError, BusError))


class JetStreamJobQueue:
    """A :class:`~vmem.bus.jobs.JobQueue` on JetStream, and the worker loop that serves it.

    `ack_wait`, `max_deliver` and `replicas` apply when the stream and the
    consumer are first created (by whichever process gets there first).
    """

    def __init__(
        self,
        conn: NatsConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        dead_after: int = DEAD_AFTER,
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> None:
        self._conn = conn
        self.subjects = Subjects(prefix)
        self.prefix = self.subjects.prefix
        self.stream = jobs_stream_name(prefix)
        self.dead_stream = f"{prefix.upper()}-DEAD"
        self.ack_wait = ack_wait
        self.max_deliver = max(max_deliver, dead_after)
        self.dead_after = dead_after
        self._on_dead: DeadLetter | None = None
        self._replicas = replicas
        self._timeout = timeout
        self._admin = JetStreamAdmin(conn, timeout=timeout, retry_for=30.0)
        self._ready = False

    # -- setup -----------------------------------------------------------------------

    async def ensure(self) -> None:
        """Create the jobs stream and the ``compressors`` consumer if they do not exist."""
        if self._ready:
            return
        stream_config = {
            "name": self.stream,
            "description": "vmem compressor jobs (work queue)",
            "subjects": [self.subjects.all_jobs()],
            "retention": "workqueue",
            "storage": "file",
            "num_replicas": self._replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "duplicate_window": 120 * 10**9,
            "deny_delete": True,
            "deny_purge": True,
        }
        dead_config = {
            **stream_config,
            "name": self.dead_stream,
            "description": "vmem compressor jobs that were given up (dead letters)",
            "subjects": [self.subjects.all_dead()],
            "retention": "limits",
        }
        for config in (stream_config, dead_config):
            await self._admin.retrying(f"stream {config['name']}", lambda config=config: self._admin.ensure_stream(config))
        consumer_config = {
            "durable_name": CONSUMER,
            "name": CONSUMER,
            "description": "vmem compressor workers (the queue group)",
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": int(self.ack_wait * 1e9),
            "max_deliver": self.max_deliver,
            "max_ack_pending": 10000,
            "max_waiting": 4096,
            "replay_policy": "instant",
        }
        await self._admin.retrying(f"consumer {CONSUMER}", lambda: self._admin.ensure_consumer(self.stream, consumer_config))
        self._ready = True

    async def stream_configs(self) -> list[dict[str, Any]]:
        """The configurations of the jobs and dead-letter streams, as the server reports them."""
        infos = [await self._admin.retrying(f"stream {name}", lambda name=name: self._admin.stream_info(name))
                 for name in (self.stream, self.dead_stream)]
        return [dict((info or {}).get("config") or {}) for info in infos]

    # -- submitting --------------------------------------------------------------------

    async def submit(self, job: CompressJob, *, timeout: float = 60.0) -> CompressDone:
        """Queue `job` and wait for a worker's result (RequestTimeout after `timeout` s)."""
        self._check_open(job)
        deadline = anyio.current_time() + timeout
        with anyio.move_on_after(timeout):
            await self.ensure()
        if not self._ready:
            raise RequestTimeout(f"compress job {job.job_id}: could not set up the job queue within {timeout} s")
        nc = self._conn.nc
        inbox = nc.new_inbox()
        got: list[NatsMsg] = []
        arrived = anyio.Event()

        async def on_reply(msg: NatsMsg) -> None:
            got.append(msg)
            arrived.set()

        try:
            sub = await nc.subscribe(inbox, cb=on_reply)
        except (nats_errors.Error, OSError) as exc:
            raise BusError(f"compress job {job.job_id}: cannot wait for its result ({type(exc).__name__}: {exc})") from None
        try:
            headers = {"Nats-Msg-Id": f"job.{uuid.uuid4().hex}", REPLY_HEADER: inbox}
            subject = self.subjects.job(job.ns)
            delay = 0.05
            while True:  # the same Nats-Msg-Id on every try: a retried publish queues one job
                try:
                    wait = min(self._timeout, max(deadline - anyio.current_time(), 0.01))
                    ack = json.loads((await self._conn.request(subject, encode(job), timeout=wait, headers=headers)).data)
                    if "error" in ack and int(ack["error"].get("code", 0)) != 503:
                        raise LogError(f"compress job {job.job_id}: JetStream refused it: {ack['error'].get('description')}")
                    if "error" not in ack:
                        break
                    problem = str(ack["error"].get("description"))
                except BusError as exc:  # NoResponders, RequestTimeout, a dropped connection
                    self._check_open(job)  # a closed connection does not come back: no use retrying
                    problem = str(exc)
                if anyio.current_time() + delay > deadline:
                    raise RequestTimeout(f"compress job {job.job_id}: could not queue it within {timeout} s: {problem}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                await arrived.wait()
            if not got:
                raise RequestTimeout(
                    f"compress job {job.job_id}: no worker finished it within {timeout} s; is a "
                    f"`vmem worker compressor` running? (the job stays queued)"
                )
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await sub.unsubscribe()
                except (nats_errors.Error, OSError):
                    pass
        reply = decode(got[0].data, Reply, where="reply from compressor.job")
        if isinstance(reply, ErrorReply):
            raise from_reply(reply.code, reply.message, "compressor.job")
        if not isinstance(reply, CompressDone):
            raise SchemaError(f"compressor.job answered {type(reply).__name__}, expected CompressDone")
        return reply

    def _check_open(self, job: CompressJob) -> None:
        # Closed by its owner, or by nats-py after its last reconnect attempt.
        if self._conn.closed or self._conn.nc.is_closed:
            raise BusError(f"compress job {job.job_id}: the NATS connection to {self._conn.url} is closed; open a new one")

    # -- working -----------------------------------------------------------------------

    async def serve(
        self,
        handler: Handler,
        *,
        concurrency: int = 1,
        latency: float = 0.0,
        on_event: JobEvent | None = None,
        after_commit: Callable[[CompressJob, CompressDone], None] | None = None,
        on_dead: DeadLetter | None = None,
    ) -> None:
        """Pull and run jobs forever, `concurrency` at a time (cancel to stop).

        `latency` seconds are slept before each job, standing in for a model
        call (benchmarks).  `on_event` hears ``{"event": "started"|"done"|"failed", ...}``.
        `after_commit` runs between the commit and the acknowledgement (tests
        use it to crash a worker there).  `on_dead` records a dead-lettered job
        in its namespace (the compressor actor appends the event).
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency must be a positive int, got {concurrency!r}")
        self._on_dead = on_dead
        await self.ensure()
        async with anyio.create_task_group() as tg:
            for slot in range(concurrency):
                tg.start_soon(self._slot, slot, handler, latency, on_event or (lambda _e: None), after_commit)

    async def _slot(self, slot: int, handler: Handler, latency: float, on_event: JobEvent, after_commit: Any) -> None:
        js = self._conn.nc.jetstream()
        psub = await js.pull_subscribe_bind(durable=CONSUMER, stream=self.stream)
        try:
            while True:
                try:
                    msgs = await psub.fetch(1, timeout=FETCH_WAIT)
                except nats_errors.TimeoutError:
                    continue
                except (nats_errors.ConnectionClosedError, nats_errors.OutboundBufferLimitError,
                        nats_errors.ConnectionReconnectingError, js_errors.APIError) as exc:
                    on_event({"event": "waiting", "slot": slot, "reason": f"{type(exc).__name__}: {exc}"})
                    await anyio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._run(msg, slot, handler, latency, on_event, after_commit)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await psub.unsubscribe()
                except (nats_errors.Error, OSError):
                    pass

    async def _run(self, msg: NatsMsg, slot: int, handler: Handler, latency: float, on_event: JobEvent, after_commit: Any) -> None:
        """Run one delivery of a job; whatever happens, the worker goes on to the next one.

        A job that fails for good (a vmem error that is not a passing outage)
        is refused and its submitter told.  One that keeps failing (an outage
        that lasts, or a bug the job triggers: a poison job) is dead-lettered
        after `dead_after` deliveries: published to
        ``vmem.<tenant>.<agent>.compressor.dead`` (kept by the stream
        ``VMEM-DEAD``) and recorded as an event by `on_dead`.
        """
        reply_to = (msg.headers or {}).get(REPLY_HEADER)
        delivered = msg.metadata.num_delivered
        try:
            job = decode(msg.data, CompressJob, where=f"job on {msg.subject}")
            if job.ns != self.subjects.namespace_of(msg.subject):
                raise UsageError(f"job for namespace {job.ns!r} sent on {msg.subject}; no worker reads across namespaces")
        except VmemError as exc:
            await self._dead_letter(msg, None, exc.message, delivered)
            await self._settle(msg.term)
            await self._reply(reply_to, ErrorReply(code=type(exc).__name__, message=exc.message))
            on_event({"event": "failed", "slot": slot, "error": exc.message, "dead_letter": True})
            return
        start = anyio.current_time()
        on_event({"event": "started", "slot": slot, "job": job.job_id, "ns": job.ns, "delivery": delivered})
        done: CompressDone | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_alive, msg)
            try:
                if latency > 0:
                    await anyio.sleep(latency)
                done = await handler(job)
            except Exception as exc:  # a vmem error, an outage or a bug: this job's, never the worker's
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            message = failure.message if isinstance(failure, VmemError) else f"{type(failure).__name__}: {failure}"
            final = isinstance(failure, VmemError) and not _transient(failure)
            if final or delivered >= self.dead_after:
                await self._dead_letter(msg, job, message, delivered)
                await self._settle(msg.term)
                code = type(failure).__name__ if isinstance(failure, VmemError) else "internal"
                await self._reply(reply_to, ErrorReply(code=code, message=f"compress job {job.job_id}: {message}"))
                on_event({"event": "failed", "slot": slot, "job": job.job_id, "error": message, "retry": False,
                          "dead_letter": True, "delivery": delivered})
            else:
                await self._settle(lambda: msg.nak(delay=1))
                on_event({"event": "failed", "slot": slot, "job": job.job_id, "error": message, "retry": True,
                          "delivery": delivered})
            return
        assert done is not None
        if after_commit is not None:
            after_commit(job, done)
        # Acknowledge, then answer (the same connection keeps that order).  Not
        # waiting for the server to confirm the ack saves a round trip: if the
        # ack is lost, the job runs again and commits nothing (duplicate).
        acked = await self._settle(msg.ack)
        await self._reply(reply_to, done)
        on_event(
            {"event": "done", "slot": slot, "job": job.job_id, "ns": job.ns, "summary": done.summary_id,
             "duplicate": done.duplicate, "delivery": delivered, "acked": acked,
             "ms": round((anyio.current_time() - start) * 1000, 1)}
        )

    async def _dead_letter(self, msg: NatsMsg, job: CompressJob | None, reason: str, delivered: int) -> None:
        """Keep a job that will not be run again, and record why (best effort: the job is refused either way)."""
        headers = {"Vmem-Error": " ".join(reason.split())[:1000] or "unknown", "Vmem-Deliveries": str(delivered)}
        try:
            await self._conn.request(self.subjects.dead(self.subjects.namespace_of(msg.subject)), msg.data,
                                     timeout=self._timeout, headers=headers)
        except VmemError:
            pass
        if job is not None and self._on_dead is not None:
            try:
                await self._on_dead(job, reason, delivered)
            except VmemError:
                pass

    async def _keep_alive(self, msg: NatsMsg) -> None:
        """Tell JetStream the job is still being worked on, so it is not redelivered meanwhile."""
        while True:
            await anyio.sleep(max(self.ack_wait / 3, 0.05))
            await self._settle(msg.in_progress)

    async def _settle(self, op: Callable[[], Awaitable[Any]]) -> bool:
        """Ack, nak, term or say in-progress; False if the server could not be told (it redelivers)."""
        try:
            await op()
            return True
        except (nats_errors.Error, OSError):
            return False

    async def _reply(self, reply_to: str | None, reply: Any) -> None:
        if not answerable(reply_to):
            return  # answers go to request inboxes only (see vmem.actors.runtime)
        try:
            await self._conn.nc.publish(reply_to, encode(reply))
        except (nats_errors.Error, OSError):
            pass  # the submitter times out; the summary is in the log either way
