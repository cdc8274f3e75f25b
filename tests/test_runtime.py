"""The actor runtime answers every request and outlives whatever one caller sends (both backends).

Embedded (LocalBus, LMDB) on asyncio and trio; tests/test_tenants.py tries the
same against `vmem serve` over NATS.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from vmem import Vmem
from vmem.bus.subjects import Subjects
from vmem.errors import AccessDenied, ActorError, SchemaError, UsageError
from vmem.schemas import events as ev
from vmem.schemas.codec import decode, encode
from vmem.schemas.messages import ErrorReply, Reply, StateReply, StateRequest

pytestmark = pytest.mark.anyio
NS = "acme/agent7"


async def _errors(vm: Vmem, ns: str) -> list[ev.ErrorRaised]:
    return [s.event async for batch in vm.events(ns, kinds=["error_raised"]) for s in batch]


async def test_a_bug_in_a_handler_is_answered_recorded_and_reported_and_the_next_request_served(tmp_path: Path, handbook_file: Path, monkeypatch):
    import vmem.actors.reader as reader

    reports: list[dict] = []
    async with Vmem.open(tmp_path / "home", create=True, report=reports.append) as vm:
        await vm.ingest(NS, handbook_file)

        def broken(*_a, **_k):
            raise RuntimeError("a bug")

        monkeypatch.setattr(reader, "resolve", broken)  # a block lookup by prefix now fails inside the actor
        with pytest.raises(ActorError, match="internal error"):
            await vm.block(NS, "0123456789ab")
        monkeypatch.undo()
        assert reports and reports[0]["event"] == "internal_error" and "a bug" in reports[0]["error"]
        assert [e.code for e in await _errors(vm, NS)] == ["internal"]
        assert (await vm.state(NS)).head > 0  # the same runtime answers the next request


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b"\x84" + encode("msg") + encode("state") + encode("ns") + encode(NS) + encode("x") + encode(1)
         + encode("junk") + b"\x91" * 30_000 + b"\x00", "SchemaError", "nested too deeply"),
        (encode({"msg": "state", "ns": "globex/agent7"}), "UsageError", "across namespaces"),
        (encode({"msg": "read", "ns": NS}), "SchemaError", "cannot decode as StateRequest"),
        (b"\xc1\xc1", "SchemaError", "cannot decode"),
        (b"{" + b" " * (2 * 2**20), "UsageError", "over this route's limit"),
    ],
    ids=["deep-nesting", "another-namespace", "wrong-request-type", "not-msgpack", "oversize"],
)
async def test_malformed_requests_get_an_error_reply(tmp_path: Path, handbook_file: Path, body: bytes, code: str, needle: str):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        msg = await vm.bus.request(Subjects().request(NS, "reader", "state"), body, timeout=10)
        reply = decode(msg.data, Reply)
        assert isinstance(reply, ErrorReply) and reply.code == code and needle in reply.message
        assert (await vm.state(NS)).head > 0


async def test_json_in_json_out(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        msg = await vm.bus.request(Subjects().request(NS, "reader", "state"), b'{"msg": "state", "ns": "acme/agent7"}', timeout=10)
        assert msgspec.json.decode(msg.data, type=StateReply).head > 0


async def test_answers_go_to_request_inboxes_only(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        async with await vm.bus.subscribe("vmem.globex.>") as elsewhere:
            await vm.bus.publish(Subjects().request(NS, "reader", "state"), encode(StateRequest(ns=NS)), reply="vmem.globex.agent1.pager.turn")
            reply = await vm._call(NS, "reader", "state", StateRequest(ns=NS), StateReply)  # served in order, after it
            assert reply.head > 0 and elsewhere.pending == 0


async def test_a_request_stamped_by_another_tenants_account_is_refused(tmp_path: Path, handbook_file: Path):
    """nats-server stamps a request crossing an account import; the actors never act for another tenant."""
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        msg = await vm.bus.request(Subjects().request(NS, "reader", "state"), encode(StateRequest(ns=NS)), timeout=10,
                                   headers={"Nats-Request-Info": '{"acc":"TENANT_globex"}'})
        reply = decode(msg.data, Reply)
        assert isinstance(reply, ErrorReply) and reply.code == "AccessDenied"


async def test_client_errors_keep_their_class(tmp_path: Path, handbook_file: Path):
    async with Vmem.open(tmp_path / "home", create=True) as vm:
        await vm.ingest(NS, handbook_file)
        with pytest.raises(UsageError, match="a query or block ids"):
            await vm.fault(NS)
        with pytest.raises(AccessDenied):
            await vm.handoff_import(await vm.handoff_export(NS), "globex/x")
        with pytest.raises(SchemaError, match="Expected `str`"):
            await vm._call(NS, "reader", "state", {"msg": "state", "ns": 7}, StateReply)
        # Fields a newer client may send are ignored: evolution is additive.
        assert (await vm._call(NS, "reader", "state", {"msg": "state", "ns": NS, "newer": 1}, StateReply)).head > 0


async def test_the_published_routes_are_the_actors_client_routes(tmp_path: Path):
    """What `vmem schema` and `vmem ops nats-config` publish is exactly what the actors serve to clients."""
    from vmem.actors.hosting import build_actors
    from vmem.bus.local import LocalBus
    from vmem.client.schema import ROUTES
    from vmem.storage.home import Home

    home = Home.init(tmp_path / "home")
    try:
        async with LocalBus() as bus:
            hosted = build_actors(home, bus)
            served = {f"{a.name}.{verb}": route.request.__struct_config__.tag
                      for a in hosted.actors for verb, route in a.routes().items() if route.client}
    finally:
        await home.aclose()
    assert served == ROUTES
