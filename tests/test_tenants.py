"""Tenants on NATS: the ops/ configuration confines each tenant to its own subjects and stream.

A real nats-server runs with ops/nats-server.conf (its store moved to a
temporary directory, passwords from the environment).  A client with tenant
``acme``'s credentials can neither publish to, subscribe to, nor read the
stream of tenant ``globex``; it can use its own.  The vmem API refuses
cross-namespace reads on its own as well.  Tenants may not create streams
(the service does).  One limit of a single NATS account is shown by a strict
xfail: a JetStream reply subject can carry a tenant's own message into
another tenant's log.  asyncio only (nats-py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import nats
import pytest
from conformance.bus_suite import rest, take
from conformance.log_suite import events_for, only_events
from natsserver import OPS_CONFIG, NatsServer

from vmem._bus_nats import NatsBus
from vmem._distributed import connect, serve
from vmem._log_jetstream import JetStreamLog
from vmem._rpc import call
from vmem.errors import AccessDenied, UsageError
from vmem.schemas.messages import PackReply, TurnRequest

PASSWORDS = {"vmem": "service-pw", "acme": "acme-pw", "globex": "globex-pw"}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ops_server() -> Iterator[NatsServer]:
    env = {
        "VMEM_SERVICE_PASSWORD": PASSWORDS["vmem"],
        "VMEM_ACME_PASSWORD": PASSWORDS["acme"],
        "VMEM_GLOBEX_PASSWORD": PASSWORDS["globex"],
    }
    with tempfile.TemporaryDirectory(prefix="vmem-ops-") as tmp:
        with NatsServer(Path(tmp), config=OPS_CONFIG, env=env) as server:
            yield server


def url(server: NatsServer, user: str) -> str:
    return server.url_for(user, PASSWORDS[user])


async def tenant_bus(server: NatsServer, tenant: str) -> NatsBus:
    return await NatsBus.connect(url(server, tenant), inbox_prefix=f"_INBOX_{tenant}")


async def tenant_log(server: NatsServer, tenant: str, *, bound: bool = False) -> JetStreamLog:
    return await JetStreamLog.connect(
        url(server, tenant), inbox_prefix=f"_INBOX_{tenant}", log_options={"tenants": [tenant]} if bound else None
    )


@pytest.fixture
async def acme_bus(ops_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with await tenant_bus(ops_server, "acme") as bus:
        yield bus


@pytest.fixture
async def globex_bus(ops_server: NatsServer) -> AsyncIterator[NatsBus]:
    async with await tenant_bus(ops_server, "globex") as bus:
        yield bus


async def test_wrong_password_is_refused(ops_server: NatsServer) -> None:
    with pytest.raises(AccessDenied):
        await NatsBus.connect(ops_server.url_for("acme", "not-the-password"), connect_timeout=5)


async def test_acme_cannot_publish_to_globex(acme_bus: NatsBus, globex_bus: NatsBus) -> None:
    inbox = await globex_bus.subscribe("vmem.globex.agent1.>")
    # Its own subjects work.
    mine = await acme_bus.subscribe("vmem.acme.agent1.>")
    await acme_bus.publish("vmem.acme.agent1.pager.turn", b"ok")
    assert [m.data for m in await take(mine, 1)] == [b"ok"]
    await acme_bus.flush()

    await acme_bus.publish("vmem.globex.agent1.pager.turn", b"intrusion")
    with pytest.raises(AccessDenied, match="publish"):
        await acme_bus.flush()
    # Nothing reached globex: its own barrier arrives with nothing before it.
    assert await rest(globex_bus, inbox, "vmem.globex.agent1.barrier") == []
    # A request is refused at once, not after its timeout.
    with anyio.fail_after(2), pytest.raises(AccessDenied):
        await acme_bus.request("vmem.globex.agent1.pager.turn", b"?", timeout=30)


async def test_acme_cannot_subscribe_to_globex(acme_bus: NatsBus, globex_bus: NatsBus) -> None:
    for pattern in ("vmem.globex.>", "vmem.globex.agent1.pager.turn", "vmem.*.agent1.>", ">", "_INBOX.>", "_INBOX_globex.>"):
        with pytest.raises(AccessDenied, match="subscription"):
            await acme_bus.subscribe(pattern)
    # Its own still works after the refusals.
    sub = await acme_bus.subscribe("vmem.acme.>")
    await acme_bus.publish("vmem.acme.agent1.x", b"1")
    assert [m.data for m in await take(sub, 1)] == [b"1"]


async def create_tenant_streams(server: NatsServer, *tenants: str) -> None:
    """What `vmem serve --ns <tenant>/*` does at start: tenants may not create streams."""
    service = await JetStreamLog.connect(url(server, "vmem"))
    try:
        for tenant in tenants:
            await service.ensure_tenant(tenant)
    finally:
        await service.aclose()


async def test_a_tenant_cannot_create_a_stream(ops_server: NatsServer) -> None:
    """A stream made by a tenant could capture other tenants' subjects or republish into them."""
    acme = await tenant_log(ops_server, "acme")
    try:
        # Nothing has created VMEM_acme yet (vmem serve --ns acme/* would).
        with anyio.fail_after(5), pytest.raises(AccessDenied, match="vmem serve --ns acme"):
            await acme.append("acme/agent1", events_for("acme/agent1", 1))
    finally:
        await acme.aclose()


async def test_acme_cannot_read_or_write_the_stream_of_globex(ops_server: NatsServer) -> None:
    await create_tenant_streams(ops_server, "acme", "globex")
    globex = await tenant_log(ops_server, "globex")
    acme = await tenant_log(ops_server, "acme")
    try:
        secret = events_for("globex/agent1", 3, tag="secret")
        await globex.append("globex/agent1", secret, key="g1")
        assert only_events(await globex.read("globex/agent1")) == secret
        await acme.append("acme/agent1", events_for("acme/agent1", 2), key="a1")
        assert len(await acme.read("acme/agent1")) == 2

        for attempt in (
            lambda: acme.read("globex/agent1"),
            lambda: acme.last_seq("globex/agent1"),
            lambda: acme.append("globex/agent1", events_for("globex/agent1", 1, tag="forged")),
            acme.namespaces,  # listing streams is account-wide, so tenants may not
        ):
            with anyio.fail_after(5), pytest.raises(AccessDenied):
                await attempt()
        assert only_events(await globex.read("globex/agent1")) == secret  # nothing forged got in

        # Below vmem: plain nats-py with acme's credentials gets no globex data either.
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc2 = await nats.connect(url(ops_server, "acme"), inbox_prefix="_INBOX_acme", error_cb=on_error)
        try:
            denied = (
                "$JS.API.DIRECT.GET.VMEM_globex.vmem.globex.agent1.log.*", "$JS.API.STREAM.INFO.VMEM_globex",
                "$JS.API.CONSUMER.CREATE.VMEM_globex.spy.vmem.globex.>", "$JS.API.CONSUMER.CREATE.VMEM_acme.c",
                "$JS.API.STREAM.CREATE.SPY", "$JS.API.STREAM.UPDATE.VMEM_acme", "$JS.API.STREAM.DELETE.VMEM_acme",
                "$JS.API.STREAM.PURGE.VMEM_acme", "$JS.API.STREAM.NAMES", "$JS.API.INFO",
            )
            for api in denied:
                with pytest.raises(nats.errors.TimeoutError):
                    await nc2.request(api, b"", timeout=0.5)
            await nc2.flush()
            await nc2.flush()
            assert sum("permissions violation" in e for e in errors) == len(denied)
        finally:
            await nc2.close()
        # acme's own stream survived the attempt to delete it.
        assert len(await acme.read("acme/agent1")) == 2
    finally:
        await acme.aclose()
        await globex.aclose()


async def test_the_service_cannot_delete_streams_either(ops_server: NatsServer) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    log = await JetStreamLog.connect(url(ops_server, "vmem"))
    nc = await nats.connect(url(ops_server, "vmem"), error_cb=on_error)
    try:
        await log.append("acme/agent2", events_for("acme/agent2", 1))  # the service may create streams
        for api in ("$JS.API.STREAM.DELETE.VMEM_acme", "$JS.API.STREAM.PURGE.VMEM_acme", "$JS.API.STREAM.MSG.DELETE.VMEM_acme"):
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(api, json.dumps({"seq": 1}).encode(), timeout=0.5)
        await nc.flush()
        await nc.flush()
        assert sum("permissions violation" in e for e in errors) == 3
        assert len(await log.read("acme/agent2")) == 1
    finally:
        await nc.close()
        await log.aclose()


async def test_the_vmem_api_refuses_cross_namespace_reads(ops_server: NatsServer, tmp_path: Path, handbook_file: Path) -> None:
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: serve(url(ops_server, "vmem"), home=tmp_path / "serve", namespaces=["acme/*", "globex/*"],
                          on_ready=lambda _info: ready.set())
        )
        with anyio.fail_after(30):
            await ready.wait()
        async with connect(url(ops_server, "globex"), home=tmp_path / "globex", tenant="globex") as globex:
            await globex.ingest("globex/agent7", handbook_file)
        async with connect(url(ops_server, "acme"), home=tmp_path / "acme", tenant="acme") as vm:
            # Its own namespace works end to end through the actors.
            await vm.ingest("acme/agent7", handbook_file)
            r = await vm.ask("acme/agent7", "What is the radio callsign of Gannet Point station?", budget=1024)
            assert r.answered and "GAN100" in r.answer
            block = r.cited[0]
            # Another tenant's namespace: refused by the API, before the server is asked.
            for attempt in (
                lambda: vm.block("globex/agent7", block),
                lambda: vm.ask("globex/agent7", "What is the radio callsign of Gannet Point station?", budget=1024),
                lambda: vm.replay("globex/agent7"),
                lambda: vm.tail("globex/agent7"),
            ):
                with anyio.fail_after(5), pytest.raises(AccessDenied):
                    await attempt()
            # A request on acme's own subject that names globex's namespace: the actors refuse it.
            turn = TurnRequest(ns="globex/agent7", turn=1, attempt=0, budget=1024)
            with pytest.raises(UsageError, match="across namespaces"):
                await call(vm.bus, "acme/agent7", "pager", "turn", turn, PackReply)
        # Without the API's own check, the server still refuses: an unbound client with acme's credentials.
        async with connect(url(ops_server, "acme"), home=tmp_path / "acme2", inbox_prefix="_INBOX_acme") as vm:
            with anyio.fail_after(5), pytest.raises(AccessDenied):
                await vm.block("globex/agent7", block)
        tg.cancel_scope.cancel()


async def test_jetstream_deliveries_are_never_taken_for_bus_messages(ops_server: NatsServer, globex_bus: NatsBus) -> None:
    """A reader of a stream can make the server send its messages to any subject (a direct get's reply).

    acme aims such a delivery at globex's pager; globex's bus drops it: the
    message carries Nats-Stream, which no client-sent message does.
    """
    await create_tenant_streams(ops_server, "acme")
    sub = await globex_bus.subscribe("vmem.globex.agent1.>")
    acme = await nats.connect(url(ops_server, "acme"), inbox_prefix="_INBOX_acme")
    try:
        ack = json.loads((await acme.request("vmem.acme.agent1.log._", b"crafted", timeout=5)).data)
        await acme.publish(
            "$JS.API.DIRECT.GET.VMEM_acme", json.dumps({"seq": ack["seq"]}).encode(), reply="vmem.globex.agent1.pager.turn"
        )
        await acme.flush()
        assert await rest(globex_bus, sub, "vmem.globex.agent1.barrier") == []
        assert sub.refused == 1
    finally:
        await acme.close()


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: in one NATS account, a tenant that may read its own stream can have JetStream "
    "deliver a message it wrote into another tenant's log subject (the reply subject of a JetStream API "
    "request is not permission-checked); per-tenant NATS accounts close this (see ops/README.md)",
)
async def test_a_tenant_cannot_write_into_another_tenants_stream_through_jetstream_replies(ops_server: NatsServer) -> None:
    await create_tenant_streams(ops_server, "acme", "globex")
    service = await JetStreamLog.connect(url(ops_server, "vmem"))
    acme = await nats.connect(url(ops_server, "acme"), inbox_prefix="_INBOX_acme")
    try:
        ack = json.loads((await acme.request("vmem.acme.agent3.log._", b"crafted", timeout=5)).data)
        await acme.publish("$JS.API.DIRECT.GET.VMEM_acme", json.dumps({"seq": ack["seq"]}).encode(), reply="vmem.globex.agent3.log._")
        await acme.flush()
        await anyio.sleep(0.3)
        assert await service.last_seq("globex/agent3") == 0  # fails: the crafted message is in globex's log
    finally:
        await acme.close()
        await service.aclose()
