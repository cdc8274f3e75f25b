"""The event log on NATS JetStream: one stream per tenant, one message per append.

Tenant ``T`` has the stream ``<PREFIX>_T`` (file storage, ``deny_delete``,
``deny_purge``, direct gets allowed) over ``<prefix>.T.*.log.*``; only the
service's NATS account has JetStream, so only the service reads or writes
it.  Namespace ``T/A`` appends to ``<prefix>.T.A.log.<token>``: ``_`` for an
append without an idempotency key, ``k<hash of the key>`` for one with a key.
One stream per tenant: limits, placement and retention can differ per tenant.

An append is one message, a frame (:mod:`vmem.nats.frames`), stored
atomically; event sequences are derived from stream sequences, and
``expected_last = E`` maps onto JetStream's *expected last subject sequence*
``(E+1)/STRIDE`` checked against the namespace's subjects; an ``E`` that
does not end a frame is a conflict.  Sequences of different tenants are
numbered independently: nothing compares them.

Idempotency: ``Nats-Msg-Id`` deduplicates within the stream's duplicate
window; past it, the key's own subject does.  A keyed append without
``expected_last`` is published with *expected last subject sequence* 0 on its
key subject, so the server refuses a second frame with that key at any
distance in time.  A keyed append with ``expected_last`` looks the key up
first: a key committed before the look-up is found; one committed after it
moved the namespace's head, so the server refuses ours.  A refused or
deduplicated append is resolved by reading the key's frame: the original
result comes back with ``duplicate=True`` (or ``False`` if that frame was an
earlier attempt of this very call, retried after a lost acknowledgement).
The connection never buffers a publish across a reconnect, so no stale copy
can arrive later.

The streams are :mod:`vmem.nats.log_streams`'s.  Reads are direct gets
(:mod:`vmem.nats.direct`, up to 256 frames a request), answered from the head cache (:mod:`vmem.nats.head_cache`) when
nothing can be new.  asyncio only (nats-py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import anyio

from vmem.bus.subjects import DEFAULT_PREFIX, Subjects
from vmem.errors import AccessDenied, BusError, ConcurrencyConflict, CorruptRecord, LogError, SchemaError, UsageError
from vmem.nats.admin import WRONG_LAST_SEQUENCE, ApiError, JetStreamAdmin, Transient, api_error_of, parse_json
from vmem.nats.connection import NatsConnection
from vmem.nats.direct import DirectGets
from vmem.nats.frames import (
    STRIDE,
    Frame,
    encode_frame,
    ends_a_frame,
    first_stream_seq_after,
    frame_result,
    stream_seq_of_last,
)
from vmem.nats.head_cache import HeadCache
from vmem.nats.log_streams import LogStreams, stream_name
from vmem.schemas.codec import decode_record
from vmem.schemas.events import Event
from vmem.state.fold import State
from vmem.state.namespace import subject_tokens
from vmem.state.validate import Rejected
from vmem.storage.log import AppendResult, StoredEvent, encode_batch
from vmem.storage.view import fold_checked

__all__ = ["DEFAULT_PREFIX", "STRIDE", "JetStreamLog", "stream_name"]

DEFAULT_DUPLICATE_WINDOW = 120.0
FRAMES_PER_READ = 256
BYTES_PER_READ = 8 * 2**20
_POLL_MAX = 0.25
_ELSS = "Nats-Expected-Last-Subject-Sequence"
_ELSS_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class JetStreamLog:
    """:class:`~vmem.storage.log.Log` on JetStream; see the module docstring.

    ``JetStreamLog(conn)`` shares a :class:`~vmem.nats.connection.NatsConnection`;
    ``await JetStreamLog.connect(url)`` owns one.  `tenants`, if given, binds
    the log to those tenants: any other is refused with AccessDenied.
    `retry_for` bounds how long an operation waits out an unavailable server
    (a restart, a leader election) before raising LogError.  `head_cache`
    answers "anything new?" reads from the append announcements.
    """

    def __init__(
        self,
        conn: NatsConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        tenants: Iterable[str] | None = None,
        replicas: int = 1,
        duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
        timeout: float = 5.0,
        retry_for: float = 60.0,
        api_prefix: str = "$JS.API",
        head_cache: bool = True,
        owns: bool = False,
    ) -> None:
        self._conn = conn
        self.subjects = Subjects(prefix)
        self.prefix = self.subjects.prefix
        self._tenants = None if tenants is None else frozenset(subject_tokens(f"{t}/x")[0] for t in tenants)
        self._timeout = timeout
        self._owns = owns
        self._admin = JetStreamAdmin(conn, api_prefix=api_prefix, timeout=timeout, retry_for=retry_for)
        self._direct = DirectGets(conn, api_prefix=api_prefix, timeout=timeout)
        self._heads = HeadCache(conn, self.subjects, enabled=head_cache)
        self.streams = LogStreams(self._admin, self._direct, self.subjects, replicas=replicas, duplicate_window=duplicate_window)
        self._appended: anyio.Event | None = None
        self._closed = False

    @classmethod
    async def connect(cls, url: str | Sequence[str], *, log_options: dict[str, Any] | None = None, **conn_options: Any) -> "JetStreamLog":
        """A log on a connection of its own."""
        conn = await NatsConnection.connect(url, **conn_options)
        return cls(conn, owns=True, **(log_options or {}))

    @property
    def connection(self) -> NatsConnection:
        return self._conn

    @property
    def retries(self) -> int:
        """Operations retried because NATS or JetStream was unavailable (restarts, elections)."""
        return self._admin.retries

    @property
    def local_reads(self) -> int:
        """Reads answered without asking the server (the head cache)."""
        return self._heads.local_reads

    @property
    def retry_for(self) -> float:
        return self._admin.retry_for

    @retry_for.setter
    def retry_for(self, seconds: float) -> None:
        self._admin.retry_for = seconds

    # -- streams -------------------------------------------------------------------------

    def _tenant(self, ns: str) -> tuple[str, str]:
        tenant, agent = subject_tokens(ns)
        if self._tenants is not None and tenant not in self._tenants:
            raise AccessDenied(
                f"this log is bound to tenant(s) {', '.join(sorted(self._tenants))}; namespace {ns!r} belongs to "
                f"{tenant!r}: no API reads or writes across tenants"
            )
        if self._closed:
            raise LogError("the JetStream log is closed; open a new one")
        return tenant, agent

    async def ensure_tenant(self, tenant: str) -> str:
        """Create `tenant`'s stream if it does not exist (needs the service's credentials); its name."""
        self._tenant(f"{tenant}/x")
        await self._admin.retrying(f"stream of {tenant}", lambda: self.streams.ensure(tenant))
        return self.streams.name(tenant)

    async def stream_config(self, tenant: str) -> dict[str, Any]:
        """The configuration of `tenant`'s log stream, as the server reports it ({} if it has none)."""
        return await self.streams.reported_config(tenant)

    async def _watch(self, tenant: str) -> int | None:
        if not await self.streams.exists(tenant):
            return None
        return await self._heads.watch(tenant, announced=self.streams.announces(tenant))

    def key_subject(self, ns: str, key: str | None) -> str:
        """The log subject an append to `ns` with idempotency `key` goes to (``.log._`` without one)."""
        return self.subjects.log(ns, "_" if key is None else f"k{hashlib.sha256(key.encode()).hexdigest()[:32]}")

    # -- writing ----------------------------------------------------------------------------

    async def append(self, ns: str, events: Sequence[Event], *, key: str | None = None, expected_last: int | None = None) -> AppendResult:
        records = encode_batch(ns, events)
        tenant, agent = self._tenant(ns)
        if key is not None and not isinstance(key, str):
            raise UsageError(f"an idempotency key must be a str, got {type(key).__name__}")
        if expected_last is not None and (isinstance(expected_last, bool) or not isinstance(expected_last, int) or expected_last < 0):
            raise UsageError(f"expected_last must be a sequence (int >= 0) or None, got {expected_last!r}")
        if len(records) >= STRIDE:
            raise UsageError(f"a batch of {len(records)} events is too large: append at most {STRIDE - 1} at once")
        call = uuid.uuid4().hex
        payload = encode_frame(key, call, records)
        if len(payload) > self._conn.max_payload:
            raise UsageError(
                f"a batch of {len(records)} events encodes to {len(payload)} bytes, more than the NATS server's "
                f"max_payload ({self._conn.max_payload}); append smaller batches or raise max_payload "
                f"(ops/nats-server.conf sets 8MB)"
            )
        subject = self.key_subject(ns, key)
        token = subject.rsplit(".", 1)[1]
        headers = {"Nats-Msg-Id": f"{tenant}.{agent}.{token if key is not None else 'u' + call}", "Vmem-Events": str(len(records))}
        if expected_last is None:
            if key is not None:
                headers[_ELSS] = "0"
                headers[_ELSS_SUBJECT] = subject
        else:
            if key is not None:
                found = await self._admin.retrying(f"append to {ns}", lambda: self._keyed_frame(tenant, subject, key, call))
                if found is not None:
                    return found
            if not ends_a_frame(expected_last):  # no namespace's last event can have this sequence
                self._heads.drop(ns)
                raise ConcurrencyConflict(ns, expected_last, await self.last_seq(ns))
            headers[_ELSS] = str(stream_seq_of_last(expected_last))
            headers[_ELSS_SUBJECT] = self.subjects.log_filter(ns)
        epoch: list[int | None] = [None]

        async def attempt() -> AppendResult | ApiError:
            await self.streams.ensure(tenant)
            epoch[0] = await self._watch(tenant)
            try:
                msg = await self._conn.request(subject, payload, timeout=self._timeout, headers=headers)
            except BusError as exc:  # including NoResponders and RequestTimeout: the outcome is unknown
                self.streams.forget(tenant)
                raise Transient(str(exc)) from None
            ack = parse_json(msg.data)
            error = api_error_of(ack)
            if error is not None:
                return error
            seq = int(ack["seq"])
            if not ack.get("duplicate") or key is None:  # new, or our own earlier attempt (per-call id)
                return frame_result(seq, len(records), duplicate=False)
            got = await self.streams.frame_at(tenant, seq)  # Nats-Msg-Id seen in the window: committed already
            if got is None:
                raise LogError(f"JetStream reported a duplicate of stream sequence {seq} in {self.streams.name(tenant)}, "
                               f"which is missing")
            return self._resolve(got, key, call)

        outcome = await self._admin.retrying(f"append to {ns}", attempt)
        if isinstance(outcome, ApiError):
            if outcome.err_code != WRONG_LAST_SEQUENCE:
                raise LogError(f"JetStream refused an append to {ns}: {outcome}")
            found = None
            if key is not None:
                # Refused because the key is taken: by another call (a duplicate),
                # or by an earlier attempt of this one whose acknowledgement was lost.
                found = await self._admin.retrying(f"append to {ns}", lambda: self._keyed_frame(tenant, subject, key, call))
            if found is None:
                if expected_last is None:
                    raise LogError(f"JetStream refused an append to {ns} ({outcome}) but the key's frame is not there")
                self._heads.drop(ns)  # another writer got in: read from the server again
                raise ConcurrencyConflict(ns, expected_last, await self.last_seq(ns))
            outcome = found
        if not outcome.duplicate:
            self._heads.raise_head(ns, stream_seq_of_last(outcome.last_seq), epoch[0])
            if expected_last is not None and epoch[0] is not None:
                self._heads.remember_own(ns, expected_last, outcome, list(events))
        if self._appended is not None:
            self._appended.set()
            self._appended = None
        return outcome

    async def _keyed_frame(self, tenant: str, subject: str, key: str, call: str) -> AppendResult | None:
        got = await self.streams.last_frame(tenant, subject)
        return None if got is None else self._resolve(got, key, call)

    @staticmethod
    def _resolve(got: tuple[int, Frame], key: str | None, call: str) -> AppendResult:
        seq, frame = got
        if frame.key != key:
            raise LogError(f"stream sequence {seq} holds key {frame.key!r}, not {key!r}: an idempotency-key hash collision")
        return frame_result(seq, len(frame.records), duplicate=frame.call != call)

    # -- reading ----------------------------------------------------------------------------

    async def read(self, ns: str, *, after: int = 0, limit: int = 4096) -> list[StoredEvent]:
        tenant, _agent = self._tenant(ns)
        out: list[StoredEvent] = []
        if limit < 1:
            return out
        start = first_stream_seq_after(after)
        if self._heads.nothing_from(ns, start):
            return out  # nothing was appended since (announcements would have said so)
        own = self._heads.own_after(ns, after)
        if own is not None:
            return own[:limit]  # this log's own last append, and nothing came after it
        epoch = await self._watch(tenant)
        while len(out) < limit:
            request = {"seq": start, "next_by_subj": self.subjects.log_filter(ns),
                       "batch": min(limit - len(out), FRAMES_PER_READ), "max_bytes": BYTES_PER_READ}
            frames, more = await self._admin.retrying(f"read of {ns}", lambda: self.streams.batch(tenant, request))
            if not more:
                self._heads.raise_head(ns, frames[-1][0] if frames else start - 1, epoch)
            for seq, frame in frames:
                base = seq * STRIDE - len(frame.records)
                for i, record in enumerate(frame.records):
                    if base + i <= after:
                        continue
                    try:
                        event = decode_record(record, where=f"sequence {base + i}")
                    except SchemaError as exc:
                        raise CorruptRecord(base + i, exc.message.split(": ", 1)[-1]) from None
                    out.append(StoredEvent(base + i, event))
                    if len(out) >= limit:
                        return out
            if not frames or not more:
                break
            start = frames[-1][0] + 1
        return out

    async def read_last(self, ns: str, n: int) -> list[StoredEvent]:
        """The last `n` events of `ns`, oldest first: windows widened back from the head (sequences are shared)."""
        last = await self.last_seq(ns)
        window = max(n, 64) * STRIDE // 64
        while True:
            after = max(0, last - window)
            events = await self.read(ns, after=after, limit=10**9)
            if len(events) >= n or after == 0:
                return events[-n:] if n > 0 else []
            window *= 4

    async def fold_into(self, ns: str, state: State, *, after: int = 0, until: int | None = None,
                        on_reject: Callable[[Rejected], None] | None = None) -> tuple[int, int]:
        """Fold `ns`'s checked events into `state` (see :meth:`vmem.storage.log.Log.fold_into`)."""
        return await fold_checked(self, ns, state, after=after, until=until, on_reject=on_reject)

    async def last_seq(self, ns: str) -> int:
        tenant, _agent = self._tenant(ns)
        got = await self._admin.retrying(f"last sequence of {ns}",
                                         lambda: self.streams.last_frame(tenant, self.subjects.log_filter(ns), decode=False))
        return 0 if got is None else got[0] * STRIDE - 1

    async def follow(self, ns: str, *, after: int = 0) -> AsyncIterator[StoredEvent]:
        self._tenant(ns)
        while True:
            batch = await self.read(ns, after=after)
            for stored in batch:
                yield stored
            if batch:
                after = batch[-1].seq
                continue
            if self._appended is None:
                self._appended = anyio.Event()
            local = self._appended
            announced = self._heads.changed(ns)
            with anyio.move_on_after(_POLL_MAX):
                async with anyio.create_task_group() as tg:

                    async def on(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(on, announced)
                    tg.start_soon(on, local)
            self._heads.settled(ns, announced)

    async def namespaces(self) -> list[str]:
        if self._closed:
            raise LogError("the JetStream log is closed; open a new one")
        tenants = sorted(self._tenants) if self._tenants is not None else await self._admin.retrying("list of tenants", self.streams.tenants)
        out: list[str] = []
        for tenant in tenants:
            agents = await self._admin.retrying(f"namespaces of {tenant}", lambda: self.streams.agents(tenant))
            out += [f"{tenant}/{agent}" for agent in agents]
        return sorted(out)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._heads.aclose()
            await self._direct.aclose()
            if self._owns:
                await self._conn.aclose()
