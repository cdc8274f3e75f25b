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

Reads are direct gets (:mod:`vmem.nats.direct`, up to 256 frames a
request), answered from the head cache (:mod:`vmem.nats.head_cache`) when
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
from vmem.nats.direct import DirectGets, status_of
from vmem.nats.frames import (
    STRIDE,
    Frame,
    decode_frame,
    encode_frame,
    ends_a_frame,
    first_stream_seq_after,
    frame_result,
    stream_seq_of_last,
)
from vmem.nats.head_cache import HeadCache
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


def stream_name(tenant: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The JetStream stream holding `tenant`'s log: ``VMEM_<tenant>`` for the default prefix."""
    return f"{prefix.upper()}_{tenant}"


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
        self._replicas = replicas
        self._window = duplicate_window
        self._timeout = timeout
        self._owns = owns
        self._admin = JetStreamAdmin(conn, api_prefix=api_prefix, timeout=timeout, retry_for=retry_for)
        self._direct = DirectGets(conn, api_prefix=api_prefix, timeout=timeout)
        self._heads = HeadCache(conn, self.subjects, enabled=head_cache)
        self._streams: dict[str, bool] = {}  # stream -> whether it announces its appends (known to exist)
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

    def _stream(self, tenant: str) -> str:
        return stream_name(tenant, self.prefix)

    def _config(self, tenant: str) -> dict[str, Any]:
        return {
            "name": self._stream(tenant),
            "description": f"vmem event log of tenant {tenant}",
            "subjects": [self.subjects.tenant_logs(tenant)],
            "retention": "limits", "storage": "file", "num_replicas": self._replicas, "discard": "old",
            "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msgs_per_subject": -1, "max_msg_size": -1,
            "duplicate_window": int(self._window * 1e9),
            "allow_direct": True, "deny_delete": True, "deny_purge": True,
            # After storing a frame, announce it (headers only) on <prefix>.T.A.head.
            "republish": {"src": self.subjects.tenant_logs(tenant), "dest": self.subjects.head_template(tenant),
                          "headers_only": True},
        }

    def _known(self, stream: str, config: dict[str, Any]) -> None:
        if not config.get("allow_direct"):
            raise LogError(f"stream {stream} does not allow direct gets: update it with allow_direct=true (vmem reads with direct gets)")
        republish = config.get("republish") or {}
        self._streams[stream] = bool(republish.get("headers_only")) and str(republish.get("dest", "")).endswith(".head")

    async def _exists(self, tenant: str) -> bool:
        stream = self._stream(tenant)
        if stream in self._streams:
            return True
        info = await self._admin.stream_info(stream)
        if info is None:
            return False
        self._known(stream, info.get("config") or {})
        return True

    async def _ensure_stream(self, tenant: str) -> None:
        stream = self._stream(tenant)
        if stream in self._streams:
            return
        config = await self._admin.ensure_stream(self._config(tenant), refused=(
            f"the stream {stream} of tenant {tenant!r} does not exist and these credentials may not create it: "
            f"start `vmem serve --ns {tenant}/*` (it creates the streams of the tenants it serves)"))
        self._known(stream, config)

    async def ensure_tenant(self, tenant: str) -> str:
        """Create `tenant`'s stream if it does not exist (needs the service's credentials); its name."""
        self._tenant(f"{tenant}/x")
        await self._admin.retrying(f"stream of {tenant}", lambda: self._ensure_stream(tenant))
        return self._stream(tenant)

    async def stream_config(self, tenant: str) -> dict[str, Any]:
        """The configuration of `tenant`'s log stream, as the server reports it ({} if it has none)."""
        info = await self._admin.retrying(f"stream of {tenant}", lambda: self._admin.stream_info(self._stream(tenant)))
        return dict((info or {}).get("config") or {})

    async def _watch(self, tenant: str) -> int | None:
        if not await self._exists(tenant):
            return None
        return await self._heads.watch(tenant, announced=self._streams[self._stream(tenant)])

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
        stream = self._stream(tenant)
        subject = self.key_subject(ns, key)
        token = subject.rsplit(".", 1)[1]
        headers = {"Nats-Msg-Id": f"{tenant}.{agent}.{token if key is not None else 'u' + call}", "Vmem-Events": str(len(records))}
        if expected_last is None:
            if key is not None:
                headers[_ELSS] = "0"
                headers[_ELSS_SUBJECT] = subject
        else:
            if key is not None:
                found = await self._admin.retrying(f"append to {ns}", lambda: self._keyed_frame(stream, subject, key, call))
                if found is not None:
                    return found
            if not ends_a_frame(expected_last):  # no namespace's last event can have this sequence
                self._heads.drop(ns)
                raise ConcurrencyConflict(ns, expected_last, await self.last_seq(ns))
            headers[_ELSS] = str(stream_seq_of_last(expected_last))
            headers[_ELSS_SUBJECT] = self.subjects.log_filter(ns)
        epoch: list[int | None] = [None]

        async def attempt() -> AppendResult | ApiError:
            await self._ensure_stream(tenant)
            epoch[0] = await self._watch(tenant)
            try:
                msg = await self._conn.request(subject, payload, timeout=self._timeout, headers=headers)
            except BusError as exc:  # including NoResponders and RequestTimeout: the outcome is unknown
                self._streams.pop(stream, None)
                raise Transient(str(exc)) from None
            ack = parse_json(msg.data)
            error = api_error_of(ack)
            if error is not None:
                return error
            seq = int(ack["seq"])
            if not ack.get("duplicate") or key is None:  # new, or our own earlier attempt (per-call id)
                return frame_result(seq, len(records), duplicate=False)
            got = await self._frame_at(stream, seq)  # Nats-Msg-Id seen in the window: committed already
            if got is None:
                raise LogError(f"JetStream reported a duplicate of stream sequence {seq} in {stream}, which is missing")
            return self._resolve(got, key, call)

        outcome = await self._admin.retrying(f"append to {ns}", attempt)
        if isinstance(outcome, ApiError):
            if outcome.err_code != WRONG_LAST_SEQUENCE:
                raise LogError(f"JetStream refused an append to {ns}: {outcome}")
            found = None
            if key is not None:
                # Refused because the key is taken: by another call (a duplicate),
                # or by an earlier attempt of this one whose acknowledgement was lost.
                found = await self._admin.retrying(f"append to {ns}", lambda: self._keyed_frame(stream, subject, key, call))
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

    async def _keyed_frame(self, stream: str, subject: str, key: str, call: str) -> AppendResult | None:
        got = await self._last_frame(stream, subject)
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
            frames, more = await self._admin.retrying(f"read of {ns}", lambda: self._batch(tenant, request))
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
        stream = self._stream(tenant)
        got = await self._admin.retrying(f"last sequence of {ns}",
                                         lambda: self._last_frame(stream, self.subjects.log_filter(ns), decode=False))
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
        tenants = sorted(self._tenants) if self._tenants is not None else await self._admin.retrying("list of tenants", self._list_tenants)
        out: list[str] = []
        for tenant in tenants:
            subjects = await self._admin.retrying(
                f"namespaces of {tenant}", lambda: self._admin.stream_subjects(self._stream(tenant), self.subjects.tenant_logs(tenant)))
            out += [f"{tenant}/{agent}" for agent in sorted({s.split(".")[2] for s in subjects})]
        return sorted(out)

    async def _list_tenants(self) -> list[str]:
        lead = f"{self.prefix.upper()}_"
        tenants = []
        for name in await self._admin.stream_names(self.subjects.all_logs()):
            if name.startswith(lead):
                try:
                    tenants.append(subject_tokens(f"{name[len(lead):]}/x")[0])
                except UsageError:
                    continue
        return sorted(tenants)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._heads.aclose()
            await self._direct.aclose()
            if self._owns:
                await self._conn.aclose()

    # -- direct gets ------------------------------------------------------------------------

    async def _batch(self, tenant: str, request: dict[str, Any]) -> tuple[list[tuple[int, Frame]], bool]:
        stream = self._stream(tenant)
        if not await self._exists(tenant):
            return [], False
        try:
            msgs = await self._direct.get(stream, request)
        except Transient:
            self._streams.pop(stream, None)
            if not await self._exists(tenant):
                return [], False  # no stream: nothing to read
            raise
        frames: list[tuple[int, Frame]] = []
        more = False
        for msg in msgs:
            status = status_of(stream, msg)
            if status == "204":
                more = int(msg.headers.get("Nats-Num-Pending", "0")) > 0
            elif status is None:
                frames.append(self._frame_of(msg))
        return frames, more

    async def _last_frame(self, stream: str, subject: str, *, decode: bool = True) -> tuple[int, Frame] | None:
        if not await self._exists(stream[len(self.prefix) + 1 :]):
            return None
        msg = (await self._direct.get(stream, None, last_subject=subject))[-1]
        if status_of(stream, msg) is not None:
            return None
        if not decode:
            return int(msg.headers["Nats-Sequence"]), Frame(1, None, "", [])
        return self._frame_of(msg)

    async def _frame_at(self, stream: str, seq: int) -> tuple[int, Frame] | None:
        msg = (await self._admin.retrying(f"read of {stream}", lambda: self._direct.get(stream, {"seq": seq})))[-1]
        if status_of(stream, msg) is not None:
            return None
        return self._frame_of(msg)

    @staticmethod
    def _frame_of(msg: Any) -> tuple[int, Frame]:
        seq = int(msg.headers["Nats-Sequence"])
        return seq, decode_frame(seq, msg.data)

