"""Tenants on NATS: one account each; the service's account owns the streams; every attack fails.

A real nats-server runs ops/nats-server.conf (the service account VMEM, and
TENANT_acme and TENANT_globex, each importing only its own request subjects
and events).  `vmem serve` and a compressor worker run in their own
processes with the service's credentials.  Tenants are clients with a URL
and their credentials (`Vmem.connect`), or attackers with raw nats-py and
the same credentials.  Each attack is tried and fails: by the server's
refusal where it is a permission, by vmem's checks otherwise.  Records the
service did not check (planted with the service's own credentials, as
bytes in a stream from elsewhere would be) are skipped, never folded.
asyncio only (nats-py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import nats
import pytest
from natsserver import OPS_CONFIG, NatsServer
from procs import Proc, ready, start_serve, start_worker

from vmem import Vmem, sample_handbook
from vmem.assembly.tokens import get_tokenizer
from vmem.errors import AccessDenied, NoResponders, UsageError
from vmem.nats.jetstream_log import JetStreamLog
from vmem.paging.handoff import parse_snapshot, snapshot_digest
from vmem.schemas import events as ev
from vmem.schemas.codec import decode, encode
from vmem.schemas.messages import (
    ErrorReply,
    ImportReply,
    ImportRequest,
    Reply,
    StateReply,
    StateRequest,
)
from vmem.state.blocks import make_block

ROOT = Path(__file__).resolve().parents[1]
PASSWORDS = {"vmem": "service-pw", "acme": "acme-pw", "globex": "globex-pw"}
ENV = {"VMEM_SERVICE_PASSWORD": PASSWORDS["vmem"], "VMEM_ACME_PASSWORD": PASSWORDS["acme"],
       "VMEM_GLOBEX_PASSWORD": PASSWORDS["globex"]}
BUDGET = 800

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ops_server() -> Iterator[NatsServer]:
    with tempfile.TemporaryDirectory(prefix="vmem-ops-") as tmp:
        with NatsServer(Path(tmp), config=OPS_CONFIG, env=ENV) as server:
            yield server


@pytest.fixture(scope="module")
def service(ops_server: NatsServer) -> Iterator[tuple[Proc, Proc]]:
    """`vmem serve` for acme and globex, and a compressor worker: the service's processes."""
    with tempfile.TemporaryDirectory(prefix="vmem-service-") as tmp:
        started: list[Proc] = []
        env = {"VMEM_NATS_PASSWORD": PASSWORDS["vmem"]}
        try:
            serve = start_serve(started, ops_server.url, Path(tmp) / "serve", "--user", "vmem", "--ns", "acme/*",
                                "--ns", "globex/*", monitor=ops_server.monitor_url, env=env)
            worker = start_worker(started, ops_server.url, Path(tmp) / "worker", "--user", "vmem", env=env)
            serve.wait_for_sync(ready)
            worker.wait_for_sync(ready)
            yield serve, worker
        finally:
            for p in started:
                p.stop()


def tenant(server: NatsServer, name: str):  # type: ignore[no-untyped-def]
    """A tenant's client: the URL and its credentials, nothing else."""
    return Vmem.connect(server.url, user=name, password=PASSWORDS[name])


async def raw(server: NatsServer, name: str) -> nats.NATS:
    """An attacker with a tenant's credentials, below vmem: plain nats-py."""
    return await nats.connect(server.url_for(name, PASSWORDS[name]))


async def service_log(server: NatsServer) -> JetStreamLog:
    """The service's own view of the streams (a test's stand-in for bytes written elsewhere)."""
    return await JetStreamLog.connect(server.url_for("vmem", PASSWORDS["vmem"]))


async def seeded(server: NatsServer, name: str, ns: str, handbook: Path) -> None:
    async with tenant(server, name) as vm:
        await vm.ingest(ns, handbook)


@pytest.fixture
def handbook(tmp_path: Path) -> Path:
    path = tmp_path / "handbook.md"
    path.write_text(sample_handbook(), encoding="utf-8")
    return path


# -- what a tenant can do: its own namespaces, with a URL and credentials ---------------------------


async def test_a_tenant_works_with_only_a_url_and_its_credentials(ops_server: NatsServer, service, handbook: Path) -> None:
    async with tenant(ops_server, "acme") as vm:
        await vm.ingest("acme/agent7", handbook)
        r = await vm.ask("acme/agent7", "What is the radio callsign of Gannet Point station?", budget=BUDGET)
        assert r.answered and "GAN100" in r.answer
        assert (await vm.replay("acme/agent7")).equal
        # Another tenant's namespace: its subjects are not imported into acme's account.
        for attempt in (
            lambda: vm.block("globex/agent7", r.cited[0]),
            lambda: vm.ask("globex/agent7", "What is the radio callsign of Gannet Point station?", budget=BUDGET),
            lambda: vm.replay("globex/agent7"),
            lambda: vm.tail("globex/agent7"),
            lambda: vm.namespaces("globex"),
        ):
            with anyio.fail_after(10), pytest.raises(NoResponders):
                await attempt()
        # A request on acme's own subject that names globex's namespace: the actors refuse it.
        with pytest.raises(UsageError, match="across namespaces"):
            await vm._call("acme/agent7", "reader", "state", StateRequest(ns="globex/agent7"), StateReply)
        assert await vm.namespaces("acme") == ["acme/agent7"]


def test_the_distributed_agent_example_runs_with_a_url_and_credentials(ops_server: NatsServer, service) -> None:
    env = {**os.environ, "VMEM_NATS_URL": ops_server.url, "VMEM_NATS_USER": "acme", "VMEM_NATS_PASSWORD": PASSWORDS["acme"]}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "distributed-agent" / "agent.py"), "--ns", "acme/example"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "GAN100" in proc.stdout and "Catriona Bain" in proc.stdout and "equal: True" in proc.stdout


async def test_a_tenant_speaks_json_to_the_actors(ops_server: NatsServer, service, handbook: Path) -> None:
    """A pipeline in another language: JSON over NATS, as `vmem schema` describes it."""
    await seeded(ops_server, "acme", "acme/json", handbook)
    nc = await raw(ops_server, "acme")
    try:
        msg = await nc.request("vmem.acme.json.reader.state", b'{"msg": "state", "ns": "acme/json"}', timeout=10)
        reply = json.loads(msg.data)
        assert reply["msg"] == "state_reply" and len(reply["state_hash"]) == 64 and reply["head"] > 0
        msg = await nc.request("vmem.acme.json.reader.state", b'{"msg": "state", "ns": 7}', timeout=10)
        assert json.loads(msg.data)["msg"] == "error"
    finally:
        await nc.close()


# -- the server confines tenants: no JetStream rights at all ------------------------------------------


async def test_no_tenant_holds_any_jetstream_api_right(ops_server: NatsServer, service) -> None:
    nc = await raw(ops_server, "acme")
    try:
        for api in ("$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.VMEM_acme", "$JS.API.STREAM.CREATE.SPY",
                    "$JS.API.CONSUMER.CREATE.VMEM_acme.c"):
            reply = json.loads((await nc.request(api, b"{}", timeout=5)).data)
            assert reply["error"]["err_code"] == 10039, (api, reply)  # JetStream not enabled for the account
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("$JS.API.DIRECT.GET.VMEM_acme", b'{"seq": 1}', timeout=5)
    finally:
        await nc.close()


async def test_a_jetstream_reply_subject_cannot_write_into_another_tenants_log(ops_server: NatsServer, service) -> None:
    """Was a strict xfail with one shared account: a direct get's reply aimed at another tenant's log subject."""
    log = await service_log(ops_server)
    nc = await raw(ops_server, "acme")
    try:
        await log.ensure_tenant("globex")
        await nc.publish("$JS.API.DIRECT.GET.VMEM_acme", b'{"seq": 1}', reply="vmem.globex.agent3.log._")
        await nc.publish("vmem.globex.agent3.log._", b"crafted frame")  # straight at the log subject
        await nc.flush()
        await anyio.sleep(0.3)
        assert await log.last_seq("globex/agent3") == 0
    finally:
        await nc.close()
        await log.aclose()


async def test_key_squatting_and_junk_frames_store_nothing(ops_server: NatsServer, service, handbook: Path) -> None:
    """A tenant cannot take another's idempotency keys or plant junk in any log: the subjects are not its."""
    ns = "globex/squat"
    doc_id = hashlib.sha256(handbook.read_bytes()).hexdigest()[:16]
    key_subject = f"vmem.globex.squat.log.k{hashlib.sha256(f'ingest:{doc_id}:0'.encode()).hexdigest()[:32]}"
    nc = await raw(ops_server, "acme")
    try:
        for subject in (key_subject, "vmem.acme.squat.log._", f"vmem.acme.squat.log.k{'0' * 32}"):
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request(subject, b"\x00junk", timeout=5)
    finally:
        await nc.close()
    async with tenant(ops_server, "globex") as vm:
        first = await vm.ingest(ns, handbook)
        assert not first.duplicate and first.pages > 50  # its keys were its own
        assert (await vm.ask(ns, "Who is the principal keeper of Cape Wrath?", budget=BUDGET)).answered


async def test_replies_never_reach_another_tenants_inbox(ops_server: NatsServer, service, handbook: Path) -> None:
    await seeded(ops_server, "acme", "acme/inbox", handbook)
    victim = await raw(ops_server, "globex")
    attacker = await raw(ops_server, "acme")
    try:
        got: list[bytes] = []

        async def keep(msg: nats.aio.msg.Msg) -> None:
            got.append(msg.data)

        for pattern in ("_INBOX.>", "_INBOX_globex.>", "vmem.globex.>"):
            await victim.subscribe(pattern, cb=keep)
        await victim.flush()
        body = encode(StateRequest(ns="acme/inbox"))
        for reply in ("_INBOX.steal", "_INBOX_globex.steal", "vmem.globex.agent1.pager.turn"):
            await attacker.publish("vmem.acme.inbox.reader.state", body, reply=reply)
        await attacker.flush()
        await anyio.sleep(0.5)
        assert got == []
    finally:
        await attacker.close()
        await victim.close()


def test_monitoring_is_bound_to_loopback() -> None:
    """The generated configuration binds monitoring to 127.0.0.1 (tests/test_ops_nats.py shows 127.0.0.2 refused)."""
    lines = OPS_CONFIG.read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("http:")] == ["http: 127.0.0.1:8222"]
    assert [ln for ln in lines if ln.startswith("listen:")] == ["listen: 0.0.0.0:4222"]


# -- vmem's checks: hand-offs, grants, stored bytes ----------------------------------------------------


async def test_a_handoff_across_tenants_needs_a_grant_checked_again_at_page_in(ops_server: NatsServer, service, handbook: Path) -> None:
    async with tenant(ops_server, "globex") as globex, tenant(ops_server, "acme") as acme:
        await globex.ingest("globex/alice", handbook)
        await globex.ask("globex/alice", "Who is the principal keeper of Cape Wrath?", budget=BUDGET)
        snap = await globex.handoff_export("globex/alice")
        with pytest.raises(AccessDenied, match="crosses tenants"):
            await acme.handoff_import(snap, "acme/bob")
        await globex.grant("globex", "acme")
        assert await acme.handoff_import(snap, "acme/bob") == len(snap.resident) + len(snap.summaries)
        await globex.revoke("globex", "acme")
        # Revoked after the import: the next turn pages in nothing of globex's.
        r = await acme.ask("acme/bob", "Who is the principal keeper of Cape Wrath?", budget=BUDGET, prefetch=False)
        assert not r.answered
        events = [s.event async for batch in acme.events("acme/bob") for s in batch]
        assert any(isinstance(e, ev.HandoffRefused) for e in events)
        assert not {e.block_id for e in events if isinstance(e, ev.BlockWritten)} & set(snap.resident)


async def test_a_tampered_snapshot_takes_only_what_was_exported(ops_server: NatsServer, service, handbook: Path) -> None:
    async with tenant(ops_server, "globex") as globex, tenant(ops_server, "acme") as acme:
        await globex.ingest("globex/tamper", handbook)
        await globex.ask("globex/tamper", "When was Ailsa Craig lighthouse first lit?", budget=BUDGET)
        snap = await globex.handoff_export("globex/tamper")
        extra = make_block("globex/tamper", "page", "document", "not exported", {"page": "1"}).block_id
        tampered = msgspec.structs.replace(snap, resident=(*snap.resident, extra), slots=(*snap.slots, ("secret", 1)))
        with pytest.raises(UsageError, match="altered"):
            parse_snapshot(msgspec.json.encode(tampered))
        assert snapshot_digest(tampered) != snap.snapshot_id
        # Sent anyway, under the real id: the pointers come from the recorded export, not the file.
        await globex.grant("globex", "acme", agents="carol")
        reply = await acme._call("acme/carol", "memory", "import",
                                 ImportRequest(ns="acme/carol", source_ns="globex/tamper", snapshot_id=snap.snapshot_id),
                                 ImportReply)
        assert reply.pointers == len(snap.resident) + len(snap.summaries)
        [imported] = [s.event async for batch in acme.events("acme/carol", kinds=["handoff_imported"]) for s in batch]
        assert extra not in imported.blocks and set(imported.blocks) == set(snap.resident + snap.summaries)
        assert "secret" not in dict(imported.slots)
        await globex.revoke("globex", "acme")


async def test_a_forged_handoff_import_in_the_log_pages_in_nothing(ops_server: NatsServer, service, handbook: Path) -> None:
    """An import event the service never wrote, naming another tenant's blocks: refused at page-in."""
    await seeded(ops_server, "globex", "globex/secret", handbook)
    async with tenant(ops_server, "globex") as globex:
        pages = [s.event.block_id async for batch in globex.events("globex/secret", kinds=["block_written"]) for s in batch][:3]
    log = await service_log(ops_server)
    try:
        forged = ev.HandoffImported(ns="acme/thief", snapshot_id="f" * 24, source_ns="globex/secret", blocks=tuple(pages),
                                    resident=tuple(pages))
        await log.append("acme/thief", [forged])
    finally:
        await log.aclose()
    async with tenant(ops_server, "acme") as acme:
        with pytest.raises(AccessDenied, match="crosses tenants"):  # and through the API, no grant: refused outright
            await acme._call("acme/thief2", "memory", "import",
                             ImportRequest(ns="acme/thief2", source_ns="globex/secret", snapshot_id="0" * 24), ImportReply)
        await acme.ask("acme/thief", "Who is the principal keeper of Cape Wrath?", budget=BUDGET, prefetch=False)
        events = [s.event async for batch in acme.events("acme/thief") for s in batch]
        assert any(isinstance(e, ev.HandoffRefused) and set(e.block_ids) == set(pages) for e in events)
        assert not {e.block_id for e in events if isinstance(e, ev.BlockWritten)} & set(pages)


async def test_token_counts_cannot_be_poisoned(ops_server: NatsServer, service, handbook: Path) -> None:
    """A block planted under another tenant's block id with a tiny text: rejected, and counts are per namespace."""
    await seeded(ops_server, "globex", "globex/victim", handbook)
    async with tenant(ops_server, "globex") as globex:
        pages = [s.event async for batch in globex.events("globex/victim", kinds=["block_written"]) for s in batch]
    log = await service_log(ops_server)
    try:
        planted = [msgspec.structs.replace(p, ns="acme/poison", text="x") for p in pages]  # ids of globex's, one token each
        await log.append("acme/poison", planted)
    finally:
        await log.aclose()
    async with tenant(ops_server, "acme") as acme:
        state = await acme.state("acme/poison")
        assert len(state.rejected) == len(planted) and "not the hash of its content" in state.rejected[0][1]
    async with tenant(ops_server, "globex") as globex:
        tok = get_tokenizer("cl100k_base")
        for q in ("Who is the principal keeper of Cape Wrath?", "What hazard should mariners beware of near Sumburgh?"):
            packed = await globex.begin_turn("globex/victim", q, profile=_profile(BUDGET), model_name="offline", query=q)
            assert tok.count(packed.prompt) == packed.prompt_tokens <= BUDGET


def _profile(budget: int):  # type: ignore[no-untyped-def]
    from vmem import profile_for_budget

    return profile_for_budget(budget)


# -- nothing one caller sends ends the process ----------------------------------------------------------


async def test_no_request_stops_the_service_for_another_tenant(ops_server: NatsServer, service, handbook: Path) -> None:
    serve, _worker = service
    await seeded(ops_server, "acme", "acme/crash", handbook)
    await seeded(ops_server, "globex", "globex/calm", handbook)
    deep = (b"\x84" + encode("msg") + encode("search") + encode("ns") + encode("acme/crash") + encode("query")
            + encode("x") + encode("junk") + b"\x91" * 20_000 + b"\x00")
    attempts = {
        "retriever.search": deep,  # nesting 20,000 deep: a RecursionError while decoding
        "pager.turn": encode({"msg": "turn", "ns": "acme/crash", "budget": 10**9}),  # a budget over the bound
        "memory.ingest": encode({"msg": "ingest", "ns": "acme/crash", "doc_id": "0" * 16, "source": "x", "batch": 0,
                                 "first_page": "one", "pages": []}),  # an attribute of the wrong type
        "reader.read": b"\xc1" * 64,  # not msgpack at all
        "memory.slot": b"x" * (2 * 2**20),  # over the route's size limit
    }
    nc = await raw(ops_server, "acme")
    try:
        for route, body in attempts.items():
            msg = await nc.request(f"vmem.acme.crash.{route}", body, timeout=10)
            reply = decode(msg.data, Reply)
            assert isinstance(reply, ErrorReply) and reply.code in ("SchemaError", "UsageError"), (route, reply)
            # The same process answers the next request, from another tenant.
            async with tenant(ops_server, "globex") as globex:
                assert (await globex.state("globex/calm")).head > 0
            assert serve.proc.poll() is None
    finally:
        await nc.close()
    # A stored record of the wrong type (a page attribute that is no number) is skipped, not folded.
    log = await service_log(ops_server)
    try:
        bad = ev.BlockWritten(ns="acme/crash", block_id="b" * 32, kind="page", role="document", text="t",
                              attrs=(("page", "not a number"),))
        await log.append("acme/crash", [bad])
    finally:
        await log.aclose()
    async with tenant(ops_server, "acme") as acme:
        state = await acme.state("acme/crash")
        assert any("is not a number" in reason for _seq, reason in state.rejected)
        assert (await acme.search("acme/crash", "Cape Wrath keeper")).candidates
    assert serve.proc.poll() is None


# -- pipelines: faults published, events watched, state replayed, each in its own process -----------------

PUBLISHER = """
import anyio, json, sys
from vmem import Vmem, sample_handbook
from pathlib import Path

async def main():
    async with Vmem.connect({url!r}, user="acme", password={pw!r}) as vm:
        doc = Path({tmp!r}) / "handbook.md"
        doc.write_text(sample_handbook())
        await vm.ingest("acme/pipe", doc)
        print(json.dumps({{"event": "ready"}}), flush=True)
        sys.stdin.readline()  # the watcher is watching
        evicted = 0
        for q in ("Gannet Point callsign", "Cape Wrath keeper", "Sumburgh hazard", "Ailsa Craig first lit", "Hound Rock lamp"):
            r = await vm.fault("acme/pipe", query=q, budget=600)
            evicted += len(r.evicted)
            print(json.dumps({{"event": "fault", "query": q, "loaded": len(r.loaded), "evicted": len(r.evicted),
                               "summaries": list(r.summaries)}}), flush=True)
        print(json.dumps({{"event": "done", "evicted": evicted}}), flush=True)

anyio.run(main, backend="asyncio")
"""

WATCHER = """
import anyio, json
from contextlib import aclosing
from vmem import Vmem

async def main():
    async with Vmem.connect({url!r}, user="acme", password={pw!r}) as vm:
        head = (await vm.state("acme/pipe")).head
        print(json.dumps({{"event": "ready", "head": head}}), flush=True)
        async with aclosing(vm.watch("acme/pipe", kinds=["page_evicted", "summary_committed"], after=head)) as events:
            async for stored in events:
                e = stored.event
                print(json.dumps({{"event": type(e).__struct_config__.tag, "seq": stored.seq,
                                   "block": getattr(e, "block_id", getattr(e, "summary_id", ""))}}), flush=True)

anyio.run(main, backend="asyncio")
"""

REPLAYER = """
import anyio, json
from vmem import Vmem, State, state_hash
from vmem.state.fold import fold

async def main():
    async with Vmem.connect({url!r}, user="acme", password={pw!r}) as vm:
        state = State(ns="acme/pipe")
        n = 0
        async for batch in vm.events("acme/pipe"):
            fold((s.event for s in batch), state)
            n += len(batch)
        live = await vm.state_hash("acme/pipe")
        print(json.dumps({{"event": "replayed", "events": n, "hash": state_hash(state), "live": live}}), flush=True)

anyio.run(main, backend="asyncio")
"""


async def test_a_pipeline_publishes_faults_watches_events_and_replays(ops_server: NatsServer, service, tmp_path: Path) -> None:
    _serve, worker = service
    args = {"url": ops_server.url, "pw": PASSWORDS["acme"], "tmp": str(tmp_path)}
    started: list[Proc] = []
    try:
        publisher = Proc([sys.executable, "-c", PUBLISHER.format(**args)], cwd=tmp_path, stdin=True)
        started.append(publisher)
        await publisher.wait_for(ready, timeout=120)
        watcher = Proc([sys.executable, "-c", WATCHER.format(**args)], cwd=tmp_path)
        started.append(watcher)
        await watcher.wait_for(ready)
        publisher.send("go\n")
        done = await publisher.wait_for(lambda o: o.get("event") == "done", timeout=120)
        assert done["evicted"] > 0
        summaries = [s for o in publisher.drain() if o.get("event") == "fault" for s in o["summaries"]]
        assert summaries
        # The watcher saw every eviction and the summaries the worker committed for them.
        for sid in summaries:
            await watcher.wait_for(lambda o, sid=sid: o.get("event") == "summary_committed" and o.get("block") == sid, timeout=60)
        seen = watcher.drain()
        assert sum(1 for o in seen if o.get("event") == "page_evicted") == done["evicted"]
        seqs = [o["seq"] for o in seen if "seq" in o]
        assert seqs == sorted(set(seqs))  # in order, none twice
        replayer = Proc([sys.executable, "-c", REPLAYER.format(**args)], cwd=tmp_path)
        started.append(replayer)
        replayed = await replayer.wait_for(lambda o: o.get("event") == "replayed", timeout=120)
        assert replayed["events"] > 0 and replayed["hash"] == replayed["live"]
        assert worker.proc.poll() is None
    finally:
        for p in started:
            p.stop()
