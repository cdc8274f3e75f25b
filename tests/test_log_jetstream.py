"""JetStreamLog: the shared Log conformance suite on a real nats-server, and JetStream's own risks.

Every test gets its own subject prefix (so its own streams) on a server shared
by the module; the fault tests start a server of their own and restart it.
asyncio only: nats-py is asyncio-only.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import nats
import pytest
from conformance.bus_suite import take
from conformance.log_suite import (
    LogConformance,
    events_for,
    fresh_ns,
    only_events,
    read_everything,
)
from natsserver import NatsServer, fresh_nats_server, nats_server  # noqa: F401 - fixtures

from vmem.errors import AccessDenied, ConcurrencyConflict, CorruptRecord, UsageError
from vmem.nats.jetstream_log import STRIDE, JetStreamLog, stream_name
from vmem.schemas import events as ev
from vmem.storage.log import AppendResult, Log

_prefixes = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}"


async def drop_streams(url: str, prefix: str) -> None:
    """Delete the streams of a test's prefix (an operator's job; vmem never deletes)."""
    nc = await nats.connect(url)
    try:
        reply = json.loads((await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)).data)
        for name in reply.get("streams") or []:
            if name.startswith(f"{prefix.upper()}_"):
                await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    finally:
        await nc.close()


@pytest.fixture
async def log(nats_server: NatsServer, prefix: str) -> AsyncIterator[JetStreamLog]:
    opened = await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix})
    try:
        yield opened
    finally:
        await opened.aclose()
        await drop_streams(nats_server.url, prefix)


@pytest.fixture
async def reopen(nats_server: NatsServer, prefix: str) -> AsyncIterator[Callable[[], Awaitable[Log]]]:
    opened: list[JetStreamLog] = []

    async def _reopen() -> Log:
        opened.append(await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix}))
        return opened[-1]

    try:
        yield _reopen
    finally:
        for each in opened:
            await each.aclose()


class TestJetStreamLogConformance(LogConformance):
    """The shared suite against JetStreamLog (asyncio only)."""


async def raw_messages(url: str, stream: str) -> list[nats.aio.msg.Msg]:
    """Every message of `stream`, with its headers, read with plain direct gets."""
    nc = await nats.connect(url)
    out = []
    try:
        seq = 1
        while True:
            msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": seq, "next_by_subj": ">"}).encode(), timeout=5)
            if msg.headers and msg.headers.get("Status"):
                return out
            out.append(msg)
            seq = int(msg.headers["Nats-Sequence"]) + 1
    finally:
        await nc.close()


@pytest.mark.anyio
class TestJetStreamSpecifics:
    async def test_one_message_per_append_and_the_sequence_mapping(self, log: JetStreamLog, nats_server: NatsServer) -> None:
        ns = "acme/agent7"
        r1 = await log.append(ns, events_for(ns, 3), key="k1")
        r2 = await log.append(ns, events_for(ns, 1, tag="x"))
        msgs = await raw_messages(nats_server.url, stream_name("acme", log.prefix))
        assert len(msgs) == 2  # a batch is one message: atomic by construction
        for msg, r, n in zip(msgs, (r1, r2), (3, 1)):
            stream_seq = int(msg.headers["Nats-Sequence"])
            assert (r.first_seq, r.last_seq) == (stream_seq * STRIDE - n, stream_seq * STRIDE - 1)
            assert msg.headers["Vmem-Events"] == str(n)
        assert msgs[0].headers["Nats-Subject"].startswith(f"{log.prefix}.acme.agent7.log.k")
        assert msgs[1].headers["Nats-Subject"] == f"{log.prefix}.acme.agent7.log._"
        # The server, not vmem, enforces key uniqueness and the namespace's head.
        assert msgs[0].headers["Nats-Expected-Last-Subject-Sequence"] == "0"
        r3 = await log.append(ns, events_for(ns, 1, tag="y"), expected_last=r2.last_seq)
        msgs = await raw_messages(nats_server.url, stream_name("acme", log.prefix))
        assert msgs[2].headers["Nats-Expected-Last-Subject-Sequence"] == str((r2.last_seq + 1) // STRIDE)
        assert msgs[2].headers["Nats-Expected-Last-Subject-Sequence-Subject"] == f"{log.prefix}.acme.agent7.log.*"
        assert await log.last_seq(ns) == r3.last_seq

    async def test_keyed_retry_after_the_duplicate_window_commits_once(self, nats_server: NatsServer, prefix: str) -> None:
        window = 0.2
        log = await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix, "duplicate_window": window})
        try:
            ns = "acme/agent7"
            batch = events_for(ns, 3)
            first = await log.append(ns, batch, key="turn-1")
            await log.append(ns, batch, key="turn-1-with-head", expected_last=first.last_seq)
            head = await log.last_seq(ns)
            nc = await nats.connect(nats_server.url)
            info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream_name('acme', prefix)}", b"", timeout=5)).data)
            await nc.close()
            assert info["config"]["duplicate_window"] == int(window * 1e9)
            await anyio.sleep(window * 3)  # Nats-Msg-Id has forgotten both appends now
            assert await log.append(ns, events_for(ns, 5, tag="other"), key="turn-1") == AppendResult(
                first.first_seq, first.last_seq, duplicate=True
            )
            # With a stale expected_last, too: the writer learns of its success, not of a conflict.
            again = await log.append(ns, batch, key="turn-1-with-head", expected_last=first.last_seq)
            assert again.duplicate and again.last_seq == head
            assert len(await log.read(ns)) == 6
        finally:
            await log.aclose()
            await drop_streams(nats_server.url, prefix)

    async def test_expected_last_conflict_between_two_processes(self, log: JetStreamLog, nats_server: NatsServer) -> None:
        other = await JetStreamLog.connect(nats_server.url, log_options={"prefix": log.prefix})
        try:
            ns = "acme/agent7"
            head = (await log.append(ns, events_for(ns, 2))).last_seq
            won = await other.append(ns, events_for(ns, 1, tag="b"), expected_last=head)
            with pytest.raises(ConcurrencyConflict) as info:
                await log.append(ns, events_for(ns, 1, tag="a"), expected_last=head)
            assert (info.value.expected, info.value.actual) == (head, won.last_seq)
            # A sequence inside a frame is never a namespace's last: a conflict, decided locally.
            with pytest.raises(ConcurrencyConflict):
                await log.append(ns, events_for(ns, 1, tag="c"), expected_last=won.last_seq - 1 if won.first_seq < won.last_seq else head - 1)
            assert only_events(await log.read(ns)) == events_for(ns, 2) + events_for(ns, 1, tag="b")
        finally:
            await other.aclose()

    async def test_large_batch_and_payload_limit(self, log: JetStreamLog) -> None:
        ns = "acme/big"
        # The size of an ingest batch: 500 pages of ~1 KB and their edges.
        batch: list[ev.Event] = []
        for i in range(500):
            batch.append(ev.BlockWritten(ns=ns, block_id=f"p{i}", kind="page", role="document", text=f"{i} " + "word " * 220))
            batch.append(ev.EdgeAdded(ns=ns, src=f"p{i}", dst=f"p{i - 1}", kind="follows"))
        r = await log.append(ns, batch, key="ingest:doc:0")
        assert r.last_seq - r.first_seq + 1 == 1000
        assert only_events(await read_everything(log, ns, page=333)) == batch
        huge = [ev.BlockWritten(ns=ns, block_id="h", kind="page", role="document", text="x" * (9 * 2**20))]
        with pytest.raises(UsageError, match="max_payload"):
            await log.append(ns, huge)

    async def test_damaged_message_is_a_corrupt_record(self, log: JetStreamLog, nats_server: NatsServer) -> None:
        ns = "acme/agent7"
        await log.append(ns, events_for(ns, 1))
        nc = await nats.connect(nats_server.url)
        try:
            await nc.request(f"{log.prefix}.acme.agent7.log._", b"not a frame", timeout=5)
        finally:
            await nc.close()
        with pytest.raises(CorruptRecord):
            await log.read(ns)

    async def test_a_log_bound_to_tenants_refuses_others(self, nats_server: NatsServer, prefix: str) -> None:
        log = await JetStreamLog.connect(nats_server.url, log_options={"prefix": prefix, "tenants": ["acme"]})
        try:
            await log.append("acme/a", events_for("acme/a", 1))
            for call in (
                lambda: log.append("globex/a", events_for("globex/a", 1)),
                lambda: log.read("globex/a"),
                lambda: log.last_seq("globex/a"),
            ):
                with pytest.raises(AccessDenied):
                    await call()
            assert await log.namespaces() == ["acme/a"]
        finally:
            await log.aclose()
            await drop_streams(nats_server.url, prefix)


@pytest.mark.anyio
@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
async def test_server_restart_in_the_middle_of_appends(fresh_nats_server: NatsServer, hard: bool) -> None:
    """Nothing acknowledged is lost and nothing is committed twice across a server restart."""
    ns = "acme/agent7"
    log = await JetStreamLog.connect(fresh_nats_server.url, log_options={"retry_for": 30.0, "timeout": 1.0})
    acked: list[tuple[AppendResult, list[ev.Event]]] = []
    restarted = anyio.Event()
    try:

        async def writer() -> None:
            for i in range(240):
                batch = events_for(ns, 1 + i % 3, tag=f"b{i}")
                # Keyed and unkeyed appends, with and without expected_last: every retry path.
                key = f"b{i}" if i % 2 else None
                expected = acked[-1][0].last_seq if i % 3 == 0 and acked else None
                acked.append((await log.append(ns, batch, key=key, expected_last=expected), batch))
                if i == 120:
                    await restarted.wait()

        async def restarter() -> None:
            with anyio.fail_after(30):
                while len(acked) < 60:
                    await anyio.sleep(0.001)
            await anyio.to_thread.run_sync(lambda: fresh_nats_server.restart(hard=hard))
            restarted.set()

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                tg.start_soon(restarter)
        stored = await read_everything(log, ns)
        assert only_events(stored) == [e for _, batch in acked for e in batch]
        for r, batch in acked:
            assert not r.duplicate
            assert [s.event for s in stored if r.first_seq <= s.seq <= r.last_seq] == batch
        assert log.connection.reconnects >= 1
        assert log.retries >= 1, "no append was in flight while the server was down"
    finally:
        await log.aclose()


@pytest.mark.anyio
async def test_follow_sees_appends_of_another_connection(log: JetStreamLog, nats_server: NatsServer) -> None:
    from contextlib import aclosing

    ns = fresh_ns()
    writer = await JetStreamLog.connect(nats_server.url, log_options={"prefix": log.prefix})
    got: list[ev.Event] = []
    try:
        with anyio.fail_after(10):
            async with aclosing(log.follow(ns)) as stream:
                await writer.append(ns, events_for(ns, 2))
                async for stored in stream:
                    got.append(stored.event)
                    if len(got) == 2:
                        await writer.append(ns, events_for(ns, 1, tag="late"))
                    if len(got) == 3:
                        break
    finally:
        await writer.aclose()
    assert got == events_for(ns, 2) + events_for(ns, 1, tag="late")


@pytest.mark.anyio
async def test_a_reader_sees_what_another_process_appended_before_telling_it(log: JetStreamLog, nats_server: NatsServer) -> None:
    """Reads answered from the head cache never miss an append that happened before a message.

    The writer appends, then tells the reader over NATS; the reader's log
    (sharing the reader's connection, as a vmem process does) must return the
    new events at once.  Most of the reader's reads in between are answered
    locally (nothing announced), so this checks the announcements' order.
    """
    from vmem.nats.bus import NatsBus
    from vmem.nats.connection import NatsConnection

    ns = fresh_ns()
    reader_conn = await NatsConnection.connect(nats_server.url)
    reader = JetStreamLog(reader_conn, prefix=log.prefix)
    bus = NatsBus(reader_conn)
    writer_bus = await NatsBus.connect(nats_server.url)
    try:
        sub = await bus.subscribe("causal.go")
        after = 0
        assert await reader.read(ns) == []
        for i in range(150):
            appended = events_for(ns, 1 + i % 2, tag=f"c{i}")
            await log.append(ns, appended)
            await writer_bus.publish("causal.go", str(i).encode())
            [msg] = await take(sub, 1)
            assert msg.data == str(i).encode()
            got = await reader.read(ns, after=after)
            assert only_events(got) == appended, i
            after = got[-1].seq
            assert await reader.read(ns, after=after) == []  # answered locally
        assert reader.local_reads >= 150
    finally:
        await writer_bus.aclose()
        await bus.aclose()
        await reader.aclose()
        await reader_conn.aclose()
