"""The event log on NATS JetStream: one stream per tenant, one message per append.

Layout
------
Tenant ``T`` has the stream ``VMEM_T`` (file storage, ``deny_delete``,
``deny_purge``, direct gets allowed) over the subjects ``vmem.T.*.log.*``.
Namespace ``T/A`` appends to ``vmem.T.A.log.<token>``: ``_`` for an append
without an idempotency key, ``k<hash of the key>`` for one with a key.  Every
subject lies inside ``vmem.T.>`` and the stream's name is the tenant's, so the
server permissions of ops/nats-server.conf confine a tenant to its own log.
One stream per tenant rather than per deployment: a tenant's permissions
then name whole JetStream API subjects (``$JS.API.DIRECT.GET.VMEM_T``,
``$JS.API.STREAM.INFO.VMEM_T``), which a shared stream could not confine, and
limits, placement and retention can differ per tenant.

Frames
------
An append is one JetStream message, a *frame*: the batch's stored records
(``schemas.codec`` format, each with its checksum) plus the idempotency key and
a per-call id.  One message is stored atomically, so a batch is all or
nothing without the atomic batch API of nats-server 2.12 (measured here:
~20 ms per atomic batch with ``sync_interval: always``, against ~0.5 ms for
one message).

Sequences
---------
Event sequences are derived from stream sequences: the ``n`` events of the
frame at stream sequence ``S`` are ``S*STRIDE - n .. S*STRIDE - 1``
(``STRIDE`` = 1,000,000).  They grow with the stream, are shared by a tenant's
namespaces, and a namespace's last sequence always ends a frame, so
``expected_last = E`` maps exactly onto JetStream's
``Nats-Expected-Last-Subject-Sequence: (E+1)/STRIDE`` checked against the
namespace's subjects (``Nats-Expected-Last-Subject-Sequence-Subject:
vmem.T.A.log.*``); an ``E`` that does not end a frame is a conflict.
Sequences of different tenants are numbered independently: nothing compares
them, since nothing reads across tenants.

Idempotency
-----------
``Nats-Msg-Id`` deduplicates within the stream's duplicate window; past it,
the key's own subject does.  A keyed append without ``expected_last`` is
published with ``Nats-Expected-Last-Subject-Sequence: 0`` on its key subject,
so the server refuses a second frame with that key, atomically, at any
distance in time.  A keyed append with ``expected_last`` looks the key up
first: a key committed before the look-up is found; one committed after it
moved the namespace's head, so the server refuses ours.  A refused or
deduplicated append is resolved by reading the key's frame: the original
result comes back with ``duplicate=True`` (or ``False`` if that frame was an
earlier attempt of this very call, retried after a lost acknowledgement).
Unkeyed appends carry a per-call ``Nats-Msg-Id``, so this log's own retries
(bounded by ``retry_for``, well inside the duplicate window) commit once, and
the connection never buffers a publish across a reconnect, so no stale copy
can arrive later.

Reads
-----
Direct gets (``next_by_subj`` on the namespace's subjects, up to 256 frames
per request): no consumer, one round trip per batch.  Each stream also
announces every frame it stores, headers only, on ``vmem.T.A.head``
(JetStream republish).  A log watching a tenant's announcements knows when a
namespace has had no new frame since its last read, and answers that read
(the common "catch up: anything new?") without a round trip; it also reads
back its own last append locally when the server confirmed it directly
followed the caller's ``expected_last``.  A reconnect forgets all of it.
nats-server announces a frame as it stores it, before acknowledging it, so a
process that hears of an append through NATS (a request sent after the
append) has heard its announcement first and reads it; this order is tested
(tests/test_log_jetstream.py), for one server.  For a cluster, or for
readers told of appends out of band, ``head_cache=False`` makes every read
ask the server.  ``follow`` waits on the announcements (or polls every
250 ms).

asyncio only (nats-py); see :mod:`vmem.nats.bus`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
import msgspec
from nats import errors as nats_errors
from nats.aio.msg import Msg as NatsMsg

from vmem.errors import (
    AccessDenied,
    BusError,
    ConcurrencyConflict,
    CorruptRecord,
    LogError,
    SchemaError,
    UsageError,
)
from vmem.nats.bus import NatsConnection
from vmem.schemas.codec import decode_record
from vmem.schemas.events import Event
from vmem.state.namespace import subject_tokens
from vmem.storage.log import AppendResult, StoredEvent, encode_batch

__all__ = ["DEFAULT_PREFIX", "STRIDE", "JetStreamLog", "stream_name"]

T = TypeVar("T")

STRIDE = 1_000_000
"""Event sequences per stream sequence: at most STRIDE - 1 events per append."""

DEFAULT_PREFIX = "vmem"
DEFAULT_DUPLICATE_WINDOW = 120.0
FRAMES_PER_READ = 256
BYTES_PER_READ = 8 * 2**20
_POLL_MAX = 0.25
_PREFIX_RE = re.compile(r"[A-Za-z0-9-]{1,32}")

_ELSS = "Nats-Expected-Last-Subject-Sequence"
_ELSS_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
_WRONG_LAST_SEQUENCE = 10071
_STREAM_NOT_FOUND = 10059


class Frame(msgspec.Struct, array_like=True, frozen=True):
    """One append as stored in one JetStream message."""

    v: int
    key: str | None
    call: str
    records: list[bytes]


_FRAME_V = 1
_frame_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)


def stream_name(tenant: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The JetStream stream holding `tenant`'s log: ``VMEM_<tenant>`` for the default prefix."""
    return f"{prefix.upper()}_{tenant}"


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise UsageError(f"invalid subject prefix {prefix!r}: 1-32 characters from [A-Za-z0-9-]")
    return prefix


class _Transient(Exception):
    """A failure worth retrying: NATS or JetStream is (briefly) unavailable."""


class _ApiError(Exception):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class _Replies:
    """Messages arriving on one request's private inbox, from the stream asked."""

    __slots__ = ("items", "event", "stream")

    def __init__(self, stream: str) -> None:
        self.items: deque[NatsMsg] = deque()
        self.event = anyio.Event()
        self.stream = stream


class JetStreamLog:
    """:class:`~vmem.storage.log.Log` on JetStream; see the module docstring.

    ``JetStreamLog(conn)`` shares a :class:`~vmem.nats.bus.NatsConnection`;
    ``await JetStreamLog.connect(url)`` owns one.  `tenants`, if given, binds
    the log to those tenants: any other is refused with AccessDenied before
    the server is asked (the server refuses it too, given the ops
    permissions).  `retry_for` bounds how long an operation waits out an
    unavailable server (a restart, a leader election) before raising LogError.
    `head_cache` answers "anything new?" reads from the append announcements
    (see the module docstring).
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
        self.prefix = _check_prefix(prefix)
        self._tenants = None if tenants is None else frozenset(subject_tokens(f"{t}/x")[0] for t in tenants)
        self._replicas = replicas
        self._window = duplicate_window
        self._timeout = timeout
        self.retry_for = retry_for
        self._api = api_prefix
        self._owns = owns
        self._streams: set[str] = set()
        self._inbox: str | None = None
        self._inbox_sub: Any = None
        self._waiting: dict[str, _Replies] = {}
        self._appended: anyio.Event | None = None
        self._closed = False
        # The head cache (see "Reads" in the module docstring).
        self._head_cache = head_cache
        self._heads: dict[str, tuple[int, int]] = {}  # ns -> (no frame above this stream seq, epoch)
        self._announced: dict[str, int] = {}  # ns -> highest stream seq announced this epoch
        # ns -> (expected_last, result, events) of this log's last append made with expected_last:
        # the server vouched that nothing lay between, so reading it back needs no round trip.
        self._own: dict[str, tuple[int, AppendResult, list[Event]]] = {}
        self._epoch = 0
        self._republish: dict[str, bool] = {}  # stream -> whether it announces its appends
        self._watching: dict[str, Any] = {}  # tenant -> subscription to its appends' announcements
        self._changed: dict[str, anyio.Event] = {}  # ns -> set when an append to it is announced
        self._unlisten = conn.on_reconnect(self._forget_heads)
        self.retries = 0
        """Operations retried because NATS or JetStream was unavailable (restarts, elections)."""
        self.local_reads = 0
        """Reads answered without asking the server (the head cache)."""

    @classmethod
    async def connect(cls, url: str | Sequence[str], *, log_options: dict[str, Any] | None = None, **conn_options: Any) -> "JetStreamLog":
        """A log on a connection of its own."""
        conn = await NatsConnection.connect(url, **conn_options)
        return cls(conn, owns=True, **(log_options or {}))

    @property
    def connection(self) -> NatsConnection:
        return self._conn

    # -- naming ------------------------------------------------------------------

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

    def _ns_filter(self, tenant: str, agent: str) -> str:
        return f"{self.prefix}.{tenant}.{agent}.log.*"

    def _key_subject(self, tenant: str, agent: str, key: str | None) -> str:
        if key is None:
            return f"{self.prefix}.{tenant}.{agent}.log._"
        return f"{self.prefix}.{tenant}.{agent}.log.k{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    # -- writing --------------------------------------------------------------------

    async def append(
        self,
        ns: str,
        events: Sequence[Event],
        *,
        key: str | None = None,
        expected_last: int | None = None,
    ) -> AppendResult:
        records = encode_batch(ns, events)
        tenant, agent = self._tenant(ns)
        if key is not None and not isinstance(key, str):
            raise UsageError(f"an idempotency key must be a str, got {type(key).__name__}")
        if expected_last is not None and (isinstance(expected_last, bool) or not isinstance(expected_last, int) or expected_last < 0):
            raise UsageError(f"expected_last must be a sequence (int >= 0) or None, got {expected_last!r}")
        if len(records) >= STRIDE:
            raise UsageError(f"a batch of {len(records)} events is too large: append at most {STRIDE - 1} at once")
        call = uuid.uuid4().hex
        payload = _frame_encoder.encode(Frame(_FRAME_V, key, call, records))
        if len(payload) > self._conn.max_payload:
            raise UsageError(
                f"a batch of {len(records)} events encodes to {len(payload)} bytes, more than the NATS server's "
                f"max_payload ({self._conn.max_payload}); append smaller batches or raise max_payload "
                f"(ops/nats-server.conf sets 8MB)"
            )
        stream = self._stream(tenant)
        subject = self._key_subject(tenant, agent, key)
        token = subject.rsplit(".", 1)[1]
        headers = {
            "Nats-Msg-Id": f"{tenant}.{agent}.{token if key is not None else 'u' + call}",
            "Vmem-Events": str(len(records)),
        }
        if expected_last is None:
            if key is not None:
                headers[_ELSS] = "0"
                headers[_ELSS_SUBJECT] = subject
        else:
            if key is not None:
                found = await self._retrying(f"append to {ns}", lambda: self._keyed_frame(stream, subject, key, call))
                if found is not None:
                    return found
            if expected_last and (expected_last + 1) % STRIDE:
                # No namespace's last event can have this sequence.
                self._heads.pop(ns, None)
                raise ConcurrencyConflict(ns, expected_last, await self.last_seq(ns))
            headers[_ELSS] = str((expected_last + 1) // STRIDE)
            headers[_ELSS_SUBJECT] = self._ns_filter(tenant, agent)

        watched: list[int | None] = [None]

        async def attempt() -> AppendResult | _ApiError:
            await self._ensure_stream(tenant)
            watched[0] = self._epoch if await self._watch(tenant) else None
            try:
                msg = await self._conn.request(subject, payload, timeout=self._timeout, headers=headers)
            except BusError as exc:  # including NoResponders and RequestTimeout: the outcome is unknown
                self._streams.discard(stream)
                raise _Transient(str(exc)) from None
            ack = _json(msg.data)
            err = ack.get("error")
            if err is not None:
                api_error = _ApiError(int(err.get("code", 0)), int(err.get("err_code", 0)), str(err.get("description", "")))
                if api_error.code == 503:
                    raise _Transient(str(api_error))
                return api_error
            seq = int(ack["seq"])
            if not ack.get("duplicate"):
                return _result(seq, len(records), duplicate=False)
            # Nats-Msg-Id was seen within the duplicate window: the frame is committed already.
            if key is None:
                return _result(seq, len(records), duplicate=False)  # our own earlier attempt
            got = await self._frame_at(stream, seq)
            if got is None:
                raise LogError(f"JetStream reported a duplicate of stream sequence {seq} in {stream}, which is missing")
            return self._resolve(got, key, call)

        outcome = await self._retrying(f"append to {ns}", attempt)
        if isinstance(outcome, _ApiError):
            if outcome.err_code != _WRONG_LAST_SEQUENCE:
                raise LogError(f"JetStream refused an append to {ns}: {outcome}")
            found = None
            if key is not None:
                # Refused because the key is taken: by another call (a duplicate),
                # or by an earlier attempt of this one whose acknowledgement was lost.
                found = await self._retrying(f"append to {ns}", lambda: self._keyed_frame(stream, subject, key, call))
            if found is None:
                if expected_last is None:
                    raise LogError(f"JetStream refused an append to {ns} ({outcome}) but the key's frame is not there")
                self._heads.pop(ns, None)  # another writer got in: read from the server again
                raise ConcurrencyConflict(ns, expected_last, await self.last_seq(ns))
            outcome = found
        if not outcome.duplicate:
            self._raise_head(ns, (outcome.last_seq + 1) // STRIDE, watched[0])
            if expected_last is not None and watched[0] is not None:
                self._own[ns] = (expected_last, outcome, list(events))
        if self._appended is not None:
            self._appended.set()
            self._appended = None
        return outcome

    async def _keyed_frame(self, stream: str, subject: str, key: str, call: str) -> AppendResult | None:
        got = await self._direct_last(stream, subject)
        return None if got is None else self._resolve(got, key, call)

    def _resolve(self, got: tuple[int, Frame], key: str | None, call: str) -> AppendResult:
        seq, frame = got
        if frame.key != key:
            raise LogError(f"stream sequence {seq} holds key {frame.key!r}, not {key!r}: an idempotency-key hash collision")
        return _result(seq, len(frame.records), duplicate=frame.call != call)

    # -- reading ----------------------------------------------------------------------

    async def read(self, ns: str, *, after: int = 0, limit: int = 4096) -> list[StoredEvent]:
        tenant, agent = self._tenant(ns)
        out: list[StoredEvent] = []
        if limit < 1:
            return out
        stream = self._stream(tenant)
        start = (max(after, 0) + 1) // STRIDE + 1
        known = self._heads.get(ns)
        if known is not None and known[1] == self._epoch:
            if start > known[0]:
                self.local_reads += 1
                return out  # nothing was appended since (announcements would have said so)
            own = self._own.get(ns)
            if own is not None and known[0] * STRIDE - 1 == own[1].last_seq and own[0] <= after < own[1].last_seq:
                # Reading back this log's own last append, and nothing came after it.
                first = own[1].first_seq
                self.local_reads += 1
                return [StoredEvent(first + i, e) for i, e in enumerate(own[2]) if first + i > after][:limit]
        epoch = self._epoch if await self._watch(tenant) else None
        subject = self._ns_filter(tenant, agent)
        while len(out) < limit:
            request = {"seq": start, "next_by_subj": subject, "batch": min(limit - len(out), FRAMES_PER_READ), "max_bytes": BYTES_PER_READ}
            frames, more = await self._retrying(f"read of {ns}", lambda: self._direct_batch(stream, request))
            if not more and epoch is not None:
                self._raise_head(ns, frames[-1][0] if frames else start - 1, epoch)
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

    async def last_seq(self, ns: str) -> int:
        tenant, agent = self._tenant(ns)
        stream = self._stream(tenant)
        got = await self._retrying(f"last sequence of {ns}", lambda: self._direct_last(stream, self._ns_filter(tenant, agent), decode=False))
        return 0 if got is None else got[0] * STRIDE - 1

    async def follow(self, ns: str, *, after: int = 0) -> AsyncIterator[StoredEvent]:
        self._tenant(ns)
        delay = _POLL_MAX
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
            announced = self._changed.setdefault(ns, anyio.Event())
            with anyio.move_on_after(delay):
                async with anyio.create_task_group() as tg:

                    async def on(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(on, announced)
                    tg.start_soon(on, local)
            if announced.is_set() and self._changed.get(ns) is announced:
                del self._changed[ns]

    # -- the head cache ------------------------------------------------------------------------

    async def _watch(self, tenant: str) -> bool:
        """Subscribe to the announcements of `tenant`'s appends; True once they can be relied on."""
        if not self._head_cache:
            return False
        if tenant in self._watching:
            return self._watching[tenant] is not None
        stream = self._stream(tenant)
        if stream not in self._streams and not await self._stream_exists(tenant):
            return False
        if not self._republish.get(stream):
            self._watching[tenant] = None  # an older stream without announcements: always read
            return False
        try:
            sub = await self._conn.nc.subscribe(f"{self.prefix}.{tenant}.*.head", cb=self._on_head, pending_msgs_limit=0, pending_bytes_limit=0)
            await self._conn.barrier()
            self._conn.check_violations(f"{self.prefix}.{tenant}.*.head")
        except (nats_errors.Error, OSError, AccessDenied):
            self._watching[tenant] = None
            return False
        self._watching[tenant] = sub
        return True

    async def _on_head(self, msg: NatsMsg) -> None:
        parts = msg.subject.split(".")
        try:
            seq = int(msg.headers["Nats-Sequence"]) if msg.headers else 0
        except (KeyError, ValueError):
            return
        ns = f"{parts[1]}/{parts[2]}"
        if seq > self._announced.get(ns, 0):
            self._announced[ns] = seq
        known = self._heads.get(ns)
        if known is not None and known[1] == self._epoch and seq > known[0]:
            self._heads[ns] = (seq, self._epoch)
        event = self._changed.pop(ns, None)
        if event is not None:
            event.set()

    def _raise_head(self, ns: str, seq: int, epoch: int | None) -> None:
        """Record that `ns` had no frame above stream sequence `seq` when a read or append of `epoch` ended.

        `epoch` is None when the tenant was not watched as that call began:
        appends announced meanwhile may have gone unheard, so nothing is recorded.
        """
        if epoch is None or epoch != self._epoch:
            return
        known = self._heads.get(ns)
        top = max(seq, self._announced.get(ns, 0), known[0] if known is not None and known[1] == epoch else 0)
        self._heads[ns] = (top, epoch)

    def _forget_heads(self) -> None:
        """After a reconnect or a dropped message, announcements may have been missed."""
        self._epoch += 1
        self._heads.clear()
        self._announced.clear()
        self._own.clear()
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    async def namespaces(self) -> list[str]:
        if self._closed:
            raise LogError("the JetStream log is closed; open a new one")
        tenants = sorted(self._tenants) if self._tenants is not None else await self._retrying("list of tenants", self._list_tenants)
        out: list[str] = []
        for tenant in tenants:
            agents = await self._retrying(f"namespaces of {tenant}", lambda: self._agents(tenant))
            out += [f"{tenant}/{agent}" for agent in agents]
        return sorted(out)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unlisten()
        subs = [self._inbox_sub, *self._watching.values()]
        self._inbox_sub = None
        self._watching.clear()
        for event in self._changed.values():
            event.set()
        with anyio.CancelScope(shield=True):
            for sub in subs:
                if sub is not None and not self._conn.closed:
                    try:
                        await sub.unsubscribe()
                    except (nats_errors.Error, OSError):
                        pass
            if self._owns:
                await self._conn.aclose()

    # -- JetStream API -----------------------------------------------------------------------

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, retrying while NATS or JetStream is unavailable, for up to `retry_for` seconds."""
        deadline = anyio.current_time() + self.retry_for
        delay = 0.02
        while True:
            try:
                return await op()
            except _Transient as exc:
                self.retries += 1
                if anyio.current_time() + delay > deadline:
                    raise LogError(
                        f"{what}: NATS JetStream at {self._conn.url} was unavailable for {self.retry_for:g} s ({exc}); "
                        f"an append may or may not have committed: retry it with the same idempotency key"
                    ) from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _api_request(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            msg = await self._conn.request(subject, json.dumps(body).encode() if body else b"", timeout=self._timeout)
        except BusError as exc:
            raise _Transient(str(exc)) from None
        reply = _json(msg.data)
        err = reply.get("error")
        if err is not None:
            api_error = _ApiError(int(err.get("code", 0)), int(err.get("err_code", 0)), str(err.get("description", "")))
            if api_error.code == 503:
                raise _Transient(str(api_error))
            raise api_error
        return reply

    def _config(self, tenant: str) -> dict[str, Any]:
        return {
            "name": self._stream(tenant),
            "description": f"vmem event log of tenant {tenant}",
            "subjects": [f"{self.prefix}.{tenant}.*.log.*"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self._replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "max_msg_size": -1,
            "duplicate_window": int(self._window * 1e9),
            "allow_direct": True,
            "deny_delete": True,
            "deny_purge": True,
            # After storing a frame, announce it (headers only) on vmem.T.A.head.
            "republish": {
                "src": f"{self.prefix}.{tenant}.*.log.*",
                "dest": f"{self.prefix}.{tenant}.{{{{wildcard(1)}}}}.head",
                "headers_only": True,
            },
        }

    async def _stream_exists(self, tenant: str) -> bool:
        stream = self._stream(tenant)
        if stream in self._streams:
            return True
        try:
            info = await self._api_request(f"{self._api}.STREAM.INFO.{stream}", None)
        except _ApiError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                return False
            raise LogError(f"cannot look up stream {stream}: {exc}") from None
        self._check_config(stream, info.get("config", {}))
        self._streams.add(stream)
        return True

    def _check_config(self, stream: str, config: dict[str, Any]) -> None:
        if not config.get("allow_direct"):
            raise LogError(f"stream {stream} does not allow direct gets: update it with allow_direct=true (vmem reads with direct gets)")
        republish = config.get("republish") or {}
        self._republish[stream] = bool(republish.get("headers_only")) and str(republish.get("dest", "")).endswith(".head")

    async def stream_config(self, tenant: str) -> dict[str, Any]:
        """The configuration of `tenant`'s log stream, as the server reports it."""
        stream = self._stream(tenant)
        info = await self._retrying(f"stream of {tenant}", lambda: self._api_request(f"{self._api}.STREAM.INFO.{stream}", None))
        return dict(info.get("config") or {})

    async def ensure_tenant(self, tenant: str) -> str:
        """Create `tenant`'s stream if it does not exist (needs the service's credentials); its name."""
        self._tenant(f"{tenant}/x")
        await self._retrying(f"stream of {tenant}", lambda: self._ensure_stream(tenant))
        return self._stream(tenant)

    async def _ensure_stream(self, tenant: str) -> None:
        if await self._stream_exists(tenant):
            return
        stream = self._stream(tenant)
        try:
            info = await self._api_request(f"{self._api}.STREAM.CREATE.{stream}", self._config(tenant))
        except AccessDenied:
            raise AccessDenied(
                f"the stream {stream} of tenant {tenant!r} does not exist and these credentials may not create it: "
                f"start `vmem serve --ns {tenant}/*` (it creates the streams of the tenants it serves) or create "
                f"it with the service's credentials"
            ) from None
        except _ApiError as exc:
            if await self._stream_exists(tenant):  # created meanwhile by another process
                return
            raise LogError(f"cannot create stream {stream}: {exc}") from None
        self._check_config(stream, info.get("config", {}))
        self._streams.add(stream)

    async def _list_tenants(self) -> list[str]:
        tenants: list[str] = []
        offset = 0
        lead = f"{self.prefix.upper()}_"
        while True:
            reply = await self._api_request(f"{self._api}.STREAM.NAMES", {"subject": f"{self.prefix}.*.*.log.*", "offset": offset})
            names = reply.get("streams") or []
            for name in names:
                if name.startswith(lead):
                    try:
                        tenants.append(subject_tokens(f"{name[len(lead):]}/x")[0])
                    except UsageError:
                        continue
            offset += len(names)
            if not names or offset >= int(reply.get("total", 0)):
                return sorted(tenants)

    async def _agents(self, tenant: str) -> list[str]:
        stream = self._stream(tenant)
        agents: set[str] = set()
        offset = 0
        while True:
            try:
                reply = await self._api_request(
                    f"{self._api}.STREAM.INFO.{stream}", {"subjects_filter": f"{self.prefix}.{tenant}.*.log.*", "offset": offset}
                )
            except _ApiError as exc:
                if exc.err_code == _STREAM_NOT_FOUND:
                    return []
                raise LogError(f"cannot list the namespaces of {tenant}: {exc}") from None
            subjects = (reply.get("state") or {}).get("subjects") or {}
            agents.update(s.split(".")[2] for s in subjects)
            offset += len(subjects)
            if not subjects or offset >= int(reply.get("total", 0)):
                return sorted(agents)

    # -- direct gets --------------------------------------------------------------------------

    async def _ensure_inbox(self) -> str:
        if self._inbox is None:
            inbox = self._conn.nc.new_inbox()
            try:
                self._inbox_sub = await self._conn.nc.subscribe(f"{inbox}.*", cb=self._on_reply, pending_msgs_limit=0, pending_bytes_limit=0)
            except nats_errors.Error as exc:
                raise _Transient(f"cannot subscribe to a reply inbox: {exc}") from None
            self._inbox = inbox
        return self._inbox

    async def _on_reply(self, msg: NatsMsg) -> None:
        waiting = self._waiting.get(msg.subject.rsplit(".", 1)[1])
        if waiting is None:
            return
        headers = msg.headers or {}
        # A stored message says which stream it came from; a status (no message, end of batch) does not.
        if headers.get("Nats-Stream", waiting.stream) != waiting.stream or not ("Nats-Stream" in headers or "Status" in headers):
            return
        waiting.items.append(msg)
        waiting.event.set()

    async def _direct(self, stream: str, body: dict[str, Any] | None, *, last_subject: str | None = None) -> list[NatsMsg]:
        """All replies to one direct get, the terminating status (if any) last."""
        inbox = await self._ensure_inbox()
        token = uuid.uuid4().hex  # unguessable: nobody else can answer in our place
        api = f"{self._api}.DIRECT.GET.{stream}" + (f".{last_subject}" if last_subject else "")
        replies = self._waiting[token] = _Replies(stream)
        refused: list[str] = []
        out: list[NatsMsg] = []
        try:
            with anyio.CancelScope() as scope:

                def notify(kind: str) -> None:
                    refused.append(kind)
                    scope.cancel()

                unwatch = self._conn.violations.watch(api, notify)
                try:
                    await self._conn.nc.publish(api, json.dumps(body).encode() if body else b"", reply=f"{inbox}.{token}")
                    while True:
                        with anyio.move_on_after(self._timeout) as wait:
                            while not replies.items:
                                await replies.event.wait()
                                replies.event = anyio.Event()
                        if wait.cancelled_caught:
                            raise _Transient(f"no answer from JetStream to a direct get on {stream} within {self._timeout} s")
                        while replies.items:
                            msg = replies.items.popleft()
                            out.append(msg)
                            status = msg.headers.get("Status") if msg.headers else None
                            if status is not None or body is None or "batch" not in body:
                                return out
                except (nats_errors.ConnectionClosedError, nats_errors.OutboundBufferLimitError,
                        nats_errors.ConnectionReconnectingError) as exc:
                    raise _Transient(f"NATS connection down ({type(exc).__name__})") from None
                finally:
                    unwatch()
            raise AccessDenied(
                f"the NATS server refused a read of stream {stream}: these credentials do not allow it "
                f"(a tenant may read only its own stream)"
            )
        finally:
            del self._waiting[token]

    def _status(self, stream: str, msg: NatsMsg) -> str | None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None or status in ("204", "404"):
            return status
        if status == "503":
            self._streams.discard(stream)
            raise _Transient(f"no responders for direct gets on {stream} (stream missing or JetStream restarting)")
        desc = msg.headers.get("Description", "") if msg.headers else ""
        raise LogError(f"JetStream answered a direct get on {stream} with status {status} {desc}".rstrip())

    async def _missing_stream(self, stream: str, tenant: str) -> bool:
        """After a 503: True if the stream does not exist (nothing to read), else retry later."""
        if await self._stream_exists(tenant):
            self._streams.discard(stream)
            return False
        return True

    async def _direct_batch(self, stream: str, request: dict[str, Any]) -> tuple[list[tuple[int, Frame]], bool]:
        tenant = stream[len(self.prefix) + 1 :]
        if stream not in self._streams and not await self._stream_exists(tenant):
            return [], False
        try:
            msgs = await self._direct(stream, request)
        except _Transient:
            if await self._missing_stream(stream, tenant):
                return [], False
            raise
        frames: list[tuple[int, Frame]] = []
        more = False
        for msg in msgs:
            status = self._status(stream, msg)
            if status == "204":
                more = int(msg.headers.get("Nats-Num-Pending", "0")) > 0
            elif status is None:
                frames.append(self._frame_of(msg))
        return frames, more

    async def _direct_last(self, stream: str, subject: str, *, decode: bool = True) -> tuple[int, Frame] | None:
        tenant = stream[len(self.prefix) + 1 :]
        if stream not in self._streams and not await self._stream_exists(tenant):
            return None
        msgs = await self._direct(stream, None, last_subject=subject)
        msg = msgs[-1]
        if self._status(stream, msg) is not None:
            return None
        if not decode:
            return int(msg.headers["Nats-Sequence"]), Frame(_FRAME_V, None, "", [])
        return self._frame_of(msg)

    async def _frame_at(self, stream: str, seq: int) -> tuple[int, Frame] | None:
        msgs = await self._retrying(f"read of {stream}", lambda: self._direct(stream, {"seq": seq}))
        msg = msgs[-1]
        if self._status(stream, msg) is not None:
            return None
        return self._frame_of(msg)

    def _frame_of(self, msg: NatsMsg) -> tuple[int, Frame]:
        seq = int(msg.headers["Nats-Sequence"])
        try:
            frame = _frame_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptRecord(seq * STRIDE - 1, f"stream message {seq} is not a vmem frame: {exc}") from None
        if frame.v != _FRAME_V:
            raise CorruptRecord(seq * STRIDE - 1, f"stream message {seq} is a frame of version {frame.v}; upgrade vmem")
        return seq, frame


def _result(stream_seq: int, n: int, *, duplicate: bool) -> AppendResult:
    return AppendResult(stream_seq * STRIDE - n, stream_seq * STRIDE - 1, duplicate=duplicate)


def _json(data: bytes) -> dict[str, Any]:
    try:
        out = json.loads(data)
    except ValueError:
        raise LogError(f"JetStream sent an answer that is not JSON: {data[:200]!r}") from None
    if not isinstance(out, dict):
        raise LogError(f"JetStream sent an unexpected answer: {data[:200]!r}")
    return out
