"""One NATS account per tenant: the configuration `vmem ops nats-config` writes, on a real nats-server.

The servers run configurations made by the generator (vmem.nats.server_config); a
fake service, plain nats-py connected as ``vmem`` in the service account,
answers every request it gets on ``vmem.>``.  Shown here: a tenant reaches
its own client-facing routes and nothing else (not another tenant's, not the
service's internal subjects, not any JetStream API), the old reply-subject
attack on another tenant's log has nothing left to work with, events reach
their tenant only, replies cannot be steered, passwords are bcrypt hashes,
monitoring listens on loopback only, and check_server_setup tells a weak
server from a good one.  ops/nats-server.conf is the generator's output.
asyncio only (nats-py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import bcrypt
import nats
import pytest
from natsserver import OPS_CONFIG, NatsServer, server_binary

from vmem.cli.ops import add_ops_commands
from vmem.client.schema import ROUTES as CLIENT_ROUTES
from vmem.errors import UsageError, VmemError
from vmem.nats.accounts import NatsConfigError, password_env, request_tenant, tenant_account, tenant_of_account
from vmem.nats.jetstream_log import JetStreamLog
from vmem.nats.passwords import MissingPassword, generate_password, password_hashes
from vmem.nats.server_check import MonitoringUnreachable, check_server_setup, fetch_varz
from vmem.nats.server_config import config_summary, nats_server_config

# A sample of client-facing routes, for the server-level tests.
SAMPLE_ROUTES = ("pager.turn", "pager.fault", "reducer.reduce", "reader.read")
# The route list ops/nats-server.conf is generated with: the service's client-facing routes.
OPS_ROUTES: Sequence[str] = tuple(CLIENT_ROUTES)
TENANTS = ["acme", "globex", "7-up"]  # 7-up: a tenant that is not a bare configuration word
PASSWORDS = {"vmem": "service-pw", "acme": "acme-pw", "globex": "globex-pw", "7-up": "seven-pw"}
ENV = {password_env(None): PASSWORDS["vmem"], **{password_env(t): PASSWORDS[t] for t in TENANTS}}
INTERNAL = ("vmem.acme.a1.log._", "vmem.acme.a1.compressor.job", "vmem.acme.a1.retriever.sync")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def expected_ops_config(routes: Sequence[str] = OPS_ROUTES) -> str:
    """What ops/nats-server.conf must hold: `vmem ops nats-config --tenant acme --tenant globex --env-passwords --route ...`."""
    return nats_server_config(["acme", "globex"], routes)


# -- servers ----------------------------------------------------------------------------------


def start_server(workdir: Path, text: str, env: Mapping[str, str]) -> NatsServer:
    """A nats-server running `text` (store, client and monitoring ports moved by NatsServer)."""
    config = workdir / "generated.conf"
    config.write_text(text)
    return NatsServer(workdir, config=config, env={**env, "VMEM_NATS_STORE": "unused"}).start()


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    """The generated configuration with passwords from the environment (--env-passwords), plaintext there."""
    with tempfile.TemporaryDirectory(prefix="vmem-ops-accounts-") as tmp:
        s = start_server(Path(tmp), nats_server_config(TENANTS, SAMPLE_ROUTES), ENV)
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def bcrypt_config() -> str:
    hashes, generated = password_hashes(TENANTS, ENV)
    assert generated == {}
    return nats_server_config(TENANTS, SAMPLE_ROUTES, password_hashes=hashes)


@pytest.fixture(scope="module")
def bcrypt_server(bcrypt_config: str) -> Iterator[NatsServer]:
    """The generated configuration in its default mode: bcrypt hashes in the file, nothing in the environment."""
    with tempfile.TemporaryDirectory(prefix="vmem-ops-bcrypt-") as tmp:
        s = start_server(Path(tmp), bcrypt_config, {})
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def weak_server() -> Iterator[NatsServer]:
    """The generated configuration, weakened: JetStream's default sync and monitoring on every interface."""
    text = nats_server_config(TENANTS, SAMPLE_ROUTES)
    text, n = re.subn(r"(?m)^\s*sync_interval: always\n", "", text)
    assert n == 1
    text = text.replace("http: 127.0.0.1:8222", "http: 0.0.0.0:8222")
    with tempfile.TemporaryDirectory(prefix="vmem-ops-weak-") as tmp:
        s = start_server(Path(tmp), text, ENV)
        try:
            yield s
        finally:
            s.stop()


# -- clients ------------------------------------------------------------------------------------


async def connect(server: NatsServer, user: str | None, password: str | None = None) -> nats.NATS:
    """A plain nats-py client logged in as `user` (its test password unless `password`; None: anonymous)."""

    async def quiet(exc: Exception) -> None:
        pass

    credentials = {} if user is None else {"user": user, "password": PASSWORDS.get(user, "") if password is None else password}
    nc = nats.NATS()
    try:
        await nc.connect(
            server.url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0, error_cb=quiet, **credentials,
        )
    except BaseException:
        # nats-py leaves the socket of a refused first connection open: close it.
        try:
            await nc.close()
            transport = getattr(nc, "_transport", None)
            if transport is not None:
                transport.close()
                await transport.wait_closed()
        except (nats.errors.Error, OSError):
            pass
        raise
    return nc


class Service:
    """A fake vmem service in the service account: answers every request on vmem.> and records it."""

    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self.seen: list[Any] = []
        self.answered = 0

    async def _on(self, msg: Any) -> None:
        self.seen.append(msg)
        if msg.reply:
            await msg.respond(b"answer to " + msg.subject.encode())
            self.answered += 1

    def on(self, subject: str) -> list[Any]:
        return [m for m in self.seen if m.subject == subject]


@pytest.fixture
async def service(server: NatsServer) -> AsyncIterator[Service]:
    nc = await connect(server, "vmem")
    svc = Service(nc)
    await nc.subscribe("vmem.>", cb=svc._on)
    await nc.flush()
    try:
        yield svc
    finally:
        await nc.close()


@pytest.fixture
async def acme(server: NatsServer) -> AsyncIterator[nats.NATS]:
    nc = await connect(server, "acme")
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def globex(server: NatsServer) -> AsyncIterator[nats.NATS]:
    nc = await connect(server, "globex")
    try:
        yield nc
    finally:
        await nc.close()


async def before_barrier(sub: Any, barrier: Any) -> list[Any]:
    """What `sub` received before the message `barrier()` publishes (on a subject `sub` matches)."""
    marker = os.urandom(8).hex().encode()
    await barrier(marker)
    got: list[Any] = []
    with anyio.fail_after(5):
        while True:
            msg = await sub.next_msg(timeout=5)
            if msg.data == marker:
                return got
            got.append(msg)


async def api(nc: nats.NATS, subject: str, body: Any = None) -> dict[str, Any]:
    payload = b"" if body is None else json.dumps(body).encode()
    return json.loads((await nc.request(subject, payload, timeout=5)).data)


# -- 1. requests: own routes only ----------------------------------------------------------------


async def test_a_tenant_reaches_its_own_routes_stamped_with_its_account(service: Service, acme: nats.NATS) -> None:
    for route in SAMPLE_ROUTES:
        subject = f"vmem.acme.agent1.{route}"
        # A forged Nats-Request-Info is replaced by the server's.
        reply = await acme.request(subject, b"?", timeout=5, headers={"Nats-Request-Info": '{"acc":"TENANT_globex"}'})
        assert reply.data == b"answer to " + subject.encode()
        (msg,) = service.on(subject)
        assert msg.reply.startswith("_R_.")  # the import's reply subject, not the tenant's inbox
        assert json.loads(msg.headers["Nats-Request-Info"])["acc"] == "TENANT_acme"
        assert request_tenant(msg.headers) == "acme"
    # Any agent token of its own tenant.
    assert (await acme.request("vmem.acme.other-agent.pager.turn", b"?", timeout=5)).data.startswith(b"answer")


async def test_a_tenant_reaches_no_other_tenants_routes_and_no_internal_subject(service: Service, acme: nats.NATS) -> None:
    refused = [f"vmem.globex.agent1.{r}" for r in SAMPLE_ROUTES] + [f"vmem.7-up.agent1.{r}" for r in SAMPLE_ROUTES]
    refused += [*INTERNAL, "vmem.acme.a1.pager.other", "vmem.acme.a1.head", "vmem.acme.a1.events", "vmem.acme.pager.turn"]
    for subject in refused:
        with pytest.raises(nats.errors.NoRespondersError):
            await acme.request(subject, b"?", timeout=5)
    # The fake service answers everything on vmem.>, so none of these reached it.
    await service.nc.flush()
    assert [m.subject for m in service.seen] == []


async def test_each_tenant_has_its_own_routes(service: Service, server: NatsServer) -> None:
    nc = await connect(server, "7-up")
    try:
        assert (await nc.request("vmem.7-up.a.reader.read", b"?", timeout=5)).data == b"answer to vmem.7-up.a.reader.read"
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("vmem.acme.a.reader.read", b"?", timeout=5)
    finally:
        await nc.close()
    (msg,) = service.seen
    assert request_tenant(msg.headers) == "7-up"


# -- 2. no JetStream for tenants; the old attack ----------------------------------------------------


async def test_no_tenant_holds_any_jetstream_api_right(acme: nats.NATS) -> None:
    # JetStream is not enabled in a tenant's account: the server answers every API request with 10039 ...
    for subject in ("$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.VMEM_acme",
                    "$JS.API.STREAM.CREATE.SPY", "$JS.API.STREAM.UPDATE.VMEM_acme", "$JS.API.STREAM.DELETE.VMEM_acme",
                    "$JS.API.STREAM.PURGE.VMEM_acme", "$JS.API.CONSUMER.CREATE.VMEM_acme.c"):
        body = {"stream_name": "VMEM_acme", "config": {"name": "c"}} if ".CONSUMER." in subject else {"name": "SPY", "subjects": ["vmem.>"]}
        reply = await api(acme, subject, body)
        assert reply["error"]["err_code"] == 10039, (subject, reply)  # JetStream not enabled for account
    # ... and nothing answers direct gets.
    for subject in ("$JS.API.DIRECT.GET.VMEM_acme", "$JS.API.DIRECT.GET.VMEM_acme.vmem.acme.a1.log.*",
                    "$JS.API.DIRECT.GET.VMEM_globex"):
        with pytest.raises(nats.errors.NoRespondersError):
            await acme.request(subject, b'{"seq": 1}', timeout=5)


async def stream_messages(nc: nats.NATS, stream: str) -> int:
    return int((await api(nc, f"$JS.API.STREAM.INFO.{stream}"))["state"]["messages"])


async def test_a_tenant_cannot_write_into_any_stream(server: NatsServer, acme: nats.NATS) -> None:
    """The old layout's strict xfail (test_tenants.py): a direct get whose reply subject is another tenant's log."""
    log = await JetStreamLog.connect(server.url_for("vmem", PASSWORDS["vmem"]))
    nc = await connect(server, "vmem")
    try:
        for tenant in ("acme", "globex"):
            await log.ensure_tenant(tenant)
        # The service publishes on the log's subjects: that is stored ...
        stored = json.loads((await nc.request("vmem.acme.agent3.log._", b"service frame", timeout=5)).data)
        assert stored["stream"] == "VMEM_acme" and stored["seq"] == 1
        key_subject = log.key_subject("acme/agent3", "k1")

        # ... acme tries everything the old layout let a tenant do.
        await acme.publish("$JS.API.DIRECT.GET.VMEM_acme", json.dumps({"seq": 1}).encode(), reply="vmem.globex.agent3.log._")
        await acme.publish("$JS.API.DIRECT.GET.VMEM_acme", json.dumps({"seq": 1}).encode(), reply="vmem.acme.agent3.log._")
        for subject in ("vmem.globex.agent3.log._", "vmem.acme.agent3.log._", key_subject, "vmem.acme.agent3.compressor.job"):
            await acme.publish(subject, b"crafted", headers={"Nats-Msg-Id": "squat", "Nats-Expected-Last-Subject-Sequence": "0"})
            with pytest.raises(nats.errors.NoRespondersError):  # no JetStream acknowledgement: nothing stored it
                await acme.request(subject, b"crafted", timeout=5)
        await acme.flush()
        await anyio.sleep(0.2)  # JetStream stores asynchronously; give a stray message time to land
        assert await stream_messages(nc, "VMEM_globex") == 0
        assert await stream_messages(nc, "VMEM_acme") == 1
        # No key was squatted: the service's frame is the first on the key's subject.
        keyed = await nc.request(key_subject, b"service keyed frame", timeout=5,
                                 headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        assert "error" not in json.loads(keyed.data)
    finally:
        await nc.close()
        await log.aclose()


# -- 3. events ------------------------------------------------------------------------------------------


async def test_events_reach_their_tenant_only(service: Service, acme: nats.NATS, globex: nats.NATS) -> None:
    acme_events = await acme.subscribe("vmem.acme.*.events")
    globex_all = await globex.subscribe(">")
    spy = await globex.subscribe("vmem.acme.>")  # allowed in globex's own account; nothing arrives there
    await acme.flush()
    await globex.flush()

    await service.nc.publish("vmem.acme.agent1.events", b"committed", headers={"Vmem-Seq": "7"})
    msg = await acme_events.next_msg(timeout=5)
    assert (msg.subject, msg.data, msg.headers) == ("vmem.acme.agent1.events", b"committed", {"Vmem-Seq": "7"})

    async def globex_barrier(marker: bytes) -> None:
        await service.nc.publish("vmem.globex.agent1.events", marker)

    assert await before_barrier(globex_all, globex_barrier) == []
    with pytest.raises(nats.errors.TimeoutError):
        await spy.next_msg(timeout=0.2)


async def test_a_tenant_cannot_publish_events(service: Service, acme: nats.NATS) -> None:
    watcher = await service.nc.subscribe("vmem.acme.*.events")
    await service.nc.flush()
    await acme.publish("vmem.acme.agent1.events", b"forged event")
    await acme.flush()

    async def service_barrier(marker: bytes) -> None:
        await service.nc.publish("vmem.acme.agent1.events", marker)

    assert await before_barrier(watcher, service_barrier) == []


# -- 4. replies ------------------------------------------------------------------------------------------


async def test_replies_cannot_be_steered_into_another_tenant(service: Service, acme: nats.NATS, globex: nats.NATS) -> None:
    globex_all = await globex.subscribe(">")
    own = await acme.subscribe("_INBOX_globex.>")  # acme's own account: where its reply really goes
    await globex.flush()
    await acme.flush()
    steered = ("_INBOX_globex.x", "vmem.globex.agent1.pager.turn", "_INBOX.x", "vmem.globex.agent1.events")
    for reply in steered:
        await acme.publish("vmem.acme.agent1.pager.turn", b"steer", reply=reply)
    await acme.flush()
    with anyio.fail_after(5):
        while service.answered < len(steered):
            await anyio.sleep(0.01)
    assert all(m.reply.startswith("_R_.") for m in service.seen)
    await service.nc.flush()  # its answers are out

    async def globex_barrier(marker: bytes) -> None:
        await service.nc.publish("vmem.globex.agent1.events", marker)

    assert await before_barrier(globex_all, globex_barrier) == []
    assert (await own.next_msg(timeout=5)).subject == "_INBOX_globex.x"


# -- 5. passwords ----------------------------------------------------------------------------------------


async def test_default_mode_writes_bcrypt_hashes_only(bcrypt_config: str, bcrypt_server: NatsServer) -> None:
    for password in PASSWORDS.values():
        assert password not in bcrypt_config
    lines = [line.strip() for line in bcrypt_config.splitlines() if "password:" in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1 + len(TENANTS)
    for line in lines:
        (hashed,) = re.findall(r'password: "(\$2b\$11\$[^"]+)"', line)
        assert any(bcrypt.checkpw(p.encode(), hashed.encode()) for p in PASSWORDS.values())

    nc = await connect(bcrypt_server, "acme")
    assert (await nc.request("$JS.API.INFO", b"", timeout=5)).data  # connected: the server answers
    await nc.close()
    for user, password in (("acme", "globex-pw"), ("acme", "ACME-PW"), ("ACME", "acme-pw"), ("vmem", "acme-pw"),
                           ("nobody", "acme-pw"), (None, None)):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(bcrypt_server, user, password)


async def test_env_mode_takes_plaintext_from_the_environment(server: NatsServer) -> None:
    nc = await connect(server, "globex")
    await nc.close()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server, "globex", "acme-pw")


async def test_env_mode_takes_a_quoted_bcrypt_hash_from_the_environment(tmp_path: Path) -> None:
    text = nats_server_config(["acme"], SAMPLE_ROUTES)
    hashed = bcrypt.hashpw(b"acme-pw", bcrypt.gensalt(4)).decode()
    env = {"VMEM_SERVICE_PASSWORD": "service-pw", "VMEM_ACME_PASSWORD": json.dumps(hashed)}
    s = start_server(tmp_path, text, env)
    try:
        nc = await connect(s, "acme")
        await nc.close()
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(s, "acme", hashed)  # the hash is not the password
    finally:
        s.stop()
    # Unquoted, nats-server takes the hash's '$2b' for a variable reference and refuses the file.
    check = config_test(text, {**env, "VMEM_ACME_PASSWORD": hashed, "VMEM_NATS_STORE": str(tmp_path)})
    assert check.returncode != 0 and "VMEM_ACME_PASSWORD" in check.stderr


def config_test(text: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`nats-server -t`: parse a configuration, start nothing."""
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        return subprocess.run([server_binary(), "-t", "-c", f.name], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=30)


def test_generated_passwords_are_bare_configuration_values() -> None:
    """--generate's passwords work through environment references as they are."""
    passwords = [generate_password() for _ in range(3)]
    assert len(set(passwords)) == 3 and all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", p) for p in passwords)
    env = {"VMEM_SERVICE_PASSWORD": passwords[0], "VMEM_ACME_PASSWORD": passwords[1], "VMEM_NATS_STORE": "/tmp/x"}
    check = config_test(nats_server_config(["acme"], SAMPLE_ROUTES), env)
    assert check.returncode == 0, check.stderr


def test_awkward_tenant_names_make_valid_configurations() -> None:
    tenants = ["123", "true", "on", "1k", "8MB", "A_b", "x" * 64, "-", "_x"]
    env = {password_env(t): f"pw{i}" for i, t in enumerate(tenants)} | {"VMEM_SERVICE_PASSWORD": "s", "VMEM_NATS_STORE": "/tmp/x"}
    check = config_test(nats_server_config(tenants, SAMPLE_ROUTES), env)
    assert check.returncode == 0, check.stderr


# -- 6. monitoring on loopback ---------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The addresses sockets of this machine listen on at `port` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _remote, state = line.split()[1:4]
            host, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(host)  # 32-bit words in host (little-endian) order
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, packed))
    return found


def http_get(host: str, port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except OSError:
        return None


def test_monitoring_listens_on_loopback_only(server: NatsServer, weak_server: NatsServer) -> None:
    """Bound to 127.0.0.1: no other address reaches it.

    The other address tried is 127.0.0.2, also this machine: a socket bound
    to 127.0.0.1 does not accept it (one bound to every interface does, as the
    weakened server shows), and the listening socket's own address is read
    from /proc/net/tcp.  No packet leaves loopback.
    """
    text = nats_server_config(TENANTS, SAMPLE_ROUTES)
    assert re.findall(r"(?m)^http: .*$", text) == ["http: 127.0.0.1:8222"]
    assert listening_addresses(server.monitor_port) == {"127.0.0.1"}
    assert http_get("127.0.0.1", server.monitor_port) == 200
    assert http_get("127.0.0.2", server.monitor_port) is None
    # The control: monitoring on every interface answers on the other address.
    assert listening_addresses(weak_server.monitor_port) - {"127.0.0.1", "::1"} != set()
    assert http_get("127.0.0.2", weak_server.monitor_port) == 200


# -- 7. check_server_setup ---------------------------------------------------------------------------------


async def stream_infos(server: NatsServer, *names: str) -> list[dict[str, Any]]:
    nc = await connect(server, "vmem")
    try:
        return [await api(nc, f"$JS.API.STREAM.INFO.{name}") for name in names]
    finally:
        await nc.close()


async def test_check_server_setup_passes_the_generated_configuration(server: NatsServer) -> None:
    log = await JetStreamLog.connect(server.url_for("vmem", PASSWORDS["vmem"]))
    try:
        streams = [await log.ensure_tenant(t) for t in ("acme", "globex")]
    finally:
        await log.aclose()
    varz = await fetch_varz(f"http://127.0.0.1:{server.monitor_port}")
    assert varz["jetstream"]["config"]["sync_always"] is True
    assert check_server_setup(varz, await stream_infos(server, *streams)) == []


async def test_a_work_queue_stream_can_deny_delete_and_purge(server: NatsServer) -> None:
    """For the jobs stream: acknowledged jobs still leave a work queue that denies delete and purge."""
    nc = await connect(server, "vmem")
    try:
        js = nc.jetstream()
        await js.add_stream(name="OPS-TEST-JOBS", subjects=["opstest.*.*.compressor.job"], retention="workqueue",
                            deny_delete=True, deny_purge=True)
        await js.publish("opstest.acme.a.compressor.job", b"job")
        sub = await js.pull_subscribe("opstest.*.*.compressor.job", durable="w")
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.ack_sync()
        (info,) = await stream_infos(server, "OPS-TEST-JOBS")
        assert info["state"]["messages"] == 0
        assert check_server_setup({"version": "2.15.1", "jetstream": {"config": {"sync_always": True}}}, [info]) == []
    finally:
        await nc.close()


async def test_check_server_setup_reports_a_weak_setup(weak_server: NatsServer) -> None:
    nc = await connect(weak_server, "vmem")
    try:
        js = nc.jetstream()
        await js.add_stream(name="MEM", subjects=["mem.>"], storage="memory", deny_delete=True, deny_purge=True)
        await js.add_stream(name="PURGEABLE", subjects=["purgeable.>"], deny_delete=True)
        await js.add_stream(name="GOOD", subjects=["good.>"], deny_delete=True, deny_purge=True)
        infos = [await api(nc, f"$JS.API.STREAM.INFO.{n}") for n in ("MEM", "PURGEABLE", "GOOD")]
    finally:
        await nc.close()
    varz = await fetch_varz(f"http://127.0.0.1:{weak_server.monitor_port}/")
    problems = check_server_setup(varz, infos)
    assert len(problems) == 3, problems
    assert "every 120 s" in problems[0] and "sync_interval: always" in problems[0]
    assert problems[1].startswith("stream MEM is stored in memory")
    assert problems[2].startswith("stream PURGEABLE lacks deny_purge")
    # A bare config (not wrapped in STREAM.INFO's reply) is read the same.
    assert check_server_setup(varz, [infos[1]["config"]]) == problems[:1] + problems[2:]

    old = check_server_setup({**varz, "version": "2.10.0"}, [])
    assert len(old) == 2 and "nats-server 2.10.0 is too old" in old[0]
    assert check_server_setup({"version": "2.11.0-RC.1", "jetstream": {"config": {"sync_always": True}}}) == []
    assert check_server_setup({"version": "2.14.0"}) == [
        "JetStream is not enabled on the server: add a jetstream { ... } block (ops/nats-server.conf)"
    ]


async def test_fetch_varz_says_when_monitoring_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(MonitoringUnreachable, match=f"127.0.0.1:{port}/varz.*loopback"):
            await fetch_varz(f"http://127.0.0.1:{port}", timeout=2)


# -- 8. ops/nats-server.conf and the CLI ----------------------------------------------------------------


def test_ops_config_is_the_generators_output() -> None:
    assert OPS_CONFIG.read_text() == expected_ops_config(), (
        "ops/nats-server.conf differs from the generator: regenerate it with "
        "vmem ops nats-config --tenant acme --tenant globex --env-passwords --route ... --out ops/nats-server.conf --force"
    )
    env = {"VMEM_SERVICE_PASSWORD": "s", "VMEM_ACME_PASSWORD": "a", "VMEM_GLOBEX_PASSWORD": "g", "VMEM_NATS_STORE": "/tmp/x"}
    check = config_test(OPS_CONFIG.read_text(), env)
    assert check.returncode == 0, check.stderr


def vmem_ops(argv: list[str], *, routes: Sequence[str] | None = None, with_json_parent: bool = False) -> int:
    """`vmem ...` with ops wired the way vmem/cli/main.py wires its commands (errors printed, exit code returned)."""
    parents = []
    if with_json_parent:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--json", action="store_true")
        parents.append(common)
    p = argparse.ArgumentParser(prog="vmem")
    sub = p.add_subparsers(dest="command", required=True)
    add_ops_commands(sub, parents, routes=routes)
    args = p.parse_args(argv)
    try:
        return int(args.run(args))
    except VmemError as exc:
        print(f"vmem: error: {exc.message}", file=__import__("sys").stderr)
        return exc.exit_code


ROUTE_ARGS = [w for r in OPS_ROUTES for w in ("--route", r)]


def test_the_cli_writes_the_ops_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert vmem_ops(["ops", "nats-config", "--tenant", "acme", "--tenant", "globex", "--env-passwords", *ROUTE_ARGS]) == 0
    assert capsys.readouterr().out == expected_ops_config()
    # Routes wired as the default of --route.
    assert vmem_ops(["ops", "nats-config", "--tenant", "acme", "--tenant", "globex", "--env-passwords"], routes=OPS_ROUTES) == 0
    assert capsys.readouterr().out == expected_ops_config()


def test_the_cli_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "nats.conf"
    out.write_text("keep me")
    argv = ["ops", "nats-config", "--tenant", "acme", "--env-passwords", "--route", "pager.turn", "--out", str(out)]
    assert vmem_ops(argv) == 2
    assert f"--out {out} exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert vmem_ops([*argv, "--force"]) == 0
    assert out.read_text() == nats_server_config(["acme"], ["pager.turn"]) and capsys.readouterr().out == ""
    # Default mode: the file holds hashes, so it is readable by its owner only.
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    argv = ["ops", "nats-config", "--tenant", "acme", "--route", "pager.turn", "--out", str(tmp_path / "b.conf")]
    assert vmem_ops(argv) == 0
    assert (tmp_path / "b.conf").stat().st_mode & 0o777 == 0o600


def test_the_cli_names_missing_password_variables(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VMEM_SERVICE_PASSWORD", "s")
    assert vmem_ops(["ops", "nats-config", "--tenant", "acme", "--tenant", "7-up", "--route", "pager.turn"]) == 2
    err = capsys.readouterr().err
    assert "no password for VMEM_ACME_PASSWORD, VMEM_7_UP_PASSWORD" in err and "--generate" in err
    with pytest.raises(MissingPassword) as info:
        password_hashes(["acme"], {})
    assert info.value.variables == ["VMEM_SERVICE_PASSWORD", "VMEM_ACME_PASSWORD"]


def test_the_cli_generates_missing_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VMEM_SERVICE_PASSWORD", "service-pw")
    secrets_file, out = tmp_path / "secrets.env", tmp_path / "nats.conf"
    argv = ["ops", "nats-config", "--tenant", "acme", "--route", "pager.turn", "--generate", str(secrets_file), "--out", str(out)]
    assert vmem_ops(argv, with_json_parent=True) == 0
    captured = capsys.readouterr()
    assert "VMEM_ACME_PASSWORD" in captured.err and captured.out == ""
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    lines = secrets_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("VMEM_ACME_PASSWORD=")
    generated = lines[0].split("=", 1)[1]
    assert generated not in captured.err and generated not in out.read_text()
    hashes = dict(re.findall(r'user: "([^"]+)", password: "([^"]+)"', out.read_text()))
    assert bcrypt.checkpw(generated.encode(), hashes["acme"].encode())
    # Never over an existing file unless --force.
    assert vmem_ops(argv) == 2
    assert "--out" in capsys.readouterr().err


def test_the_cli_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ops", "nats-config", "--tenant", "acme", "--env-passwords", "--route", "pager.turn", "--json"]
    assert vmem_ops(argv, with_json_parent=True) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"] == nats_server_config(["acme"], ["pager.turn"])
    assert summary["tenants"] == [{
        "tenant": "acme", "account": "TENANT_acme", "user": "acme", "password_env": "VMEM_ACME_PASSWORD",
        "jetstream": False, "requests": ["vmem.acme.*.pager.turn"], "events": "vmem.acme.*.events",
    }]
    assert summary["monitoring"] == "127.0.0.1:8222"
    assert summary == {**config_summary(["acme"], ["pager.turn"], env_passwords=True), "out": None, "generated": None,
                       "config": summary["config"]}


def test_the_cli_needs_tenants_and_routes(capsys: pytest.CaptureFixture[str]) -> None:
    assert vmem_ops(["ops", "nats-config", "--env-passwords", "--route", "pager.turn"]) == 2
    assert "--tenant NAME" in capsys.readouterr().err
    assert vmem_ops(["ops", "nats-config", "--env-passwords", "--tenant", "acme"]) == 2
    assert "--route" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tenants", "routes", "prefix", "message"),
    [
        (["acme."], ["pager.turn"], "vmem", "invalid tenant 'acme.'"),
        (["ac*"], ["pager.turn"], "vmem", "invalid tenant"),
        (["acme", "acme"], ["pager.turn"], "vmem", "given twice"),
        (["my-co", "MY_CO"], ["pager.turn"], "vmem", "VMEM_MY_CO_PASSWORD, as tenant 'my-co'"),
        (["service"], ["pager.turn"], "vmem", "VMEM_SERVICE_PASSWORD, as the service"),
        (["vmem"], ["pager.turn"], "vmem", "service's user"),
        ([], ["pager.turn"], "vmem", "no tenant"),
        (["acme"], ["pager"], "vmem", "invalid route 'pager'"),
        (["acme"], ["pager.*"], "vmem", "invalid route"),
        (["acme"], ["pager.turn.x"], "vmem", "invalid route"),
        (["acme"], ["log._"], "vmem", "JetStream stream"),
        (["acme"], ["compressor.job"], "vmem", "JetStream stream"),
        (["acme"], ["pager.turn", "pager.turn"], "vmem", "given twice"),
        (["acme"], [], "vmem", "no route"),
        (["acme"], ["pager.turn"], "vm.em", "invalid subject prefix"),
    ],
)
def test_bad_arguments_are_refused(tenants: list[str], routes: list[str], prefix: str, message: str) -> None:
    with pytest.raises(NatsConfigError, match=re.escape(message)):
        nats_server_config(tenants, routes, prefix=prefix)
    assert issubclass(NatsConfigError, UsageError)


def test_hashes_only() -> None:
    with pytest.raises(NatsConfigError, match="not a bcrypt hash"):
        nats_server_config(["acme"], ["pager.turn"], password_hashes={"vmem": "plain", "acme": "plain"})
    with pytest.raises(NatsConfigError, match="VMEM_ACME_PASSWORD: a password of 73 bytes"):
        password_hashes(["acme"], {"VMEM_SERVICE_PASSWORD": "s", "VMEM_ACME_PASSWORD": "x" * 73}, cost=4)


def test_names() -> None:
    assert tenant_account("acme") == "TENANT_acme" and tenant_account("ACME") == "TENANT_ACME"
    assert tenant_of_account("TENANT_my-co") == "my-co"
    assert tenant_of_account("VMEM") is None and tenant_of_account("$SYS") is None
    assert password_env("my-co") == "VMEM_MY_CO_PASSWORD" and password_env(None) == "VMEM_SERVICE_PASSWORD"
    assert request_tenant({"Nats-Request-Info": '{"acc":"TENANT_acme","rtt":1}'}) == "acme"
    assert request_tenant({"Nats-Request-Info": '{"acc":"VMEM"}'}) is None
    assert request_tenant({"Nats-Request-Info": "not json"}) is None and request_tenant(None) is None


def test_another_prefix() -> None:
    text = nats_server_config(["acme"], ["pager.turn"], prefix="prod")
    assert '{ service: "prod.acme.*.pager.turn", accounts: ["TENANT_acme"] }' in text
    assert '{ stream: { account: "VMEM", subject: "prod.acme.*.events" } }' in text
    assert "vmem." not in text.split("accounts {", 1)[1].replace('user: "vmem"', "")
    assert "--prefix prod" in text


async def test_a_tenant_is_added_by_regenerating_the_file_and_restarting(tmp_path: Path) -> None:
    """Regenerate with the new --tenant, restart nats-server: the new tenant reaches its routes.

    A restart, not a reload: nats-server 2.15.1, on one SIGHUP, lets the new
    user log in but leaves its account's imports unwired (no responders) until
    a second reload (see ops/README.md).
    """
    env = {"VMEM_SERVICE_PASSWORD": "service-pw", "VMEM_ACME_PASSWORD": "acme-pw", "VMEM_INITECH_PASSWORD": "initech-pw"}
    hashes, _ = password_hashes(["acme"], env, cost=4)
    s = start_server(tmp_path, nats_server_config(["acme"], SAMPLE_ROUTES, password_hashes=hashes), {})
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(s, "initech", "initech-pw")
        hashes, _ = password_hashes(["acme", "initech"], env, cost=4)
        text = nats_server_config(["acme", "initech"], SAMPLE_ROUTES, password_hashes=hashes)
        s.config.write_text(re.sub(r"(?m)^(\s*store_dir:\s*).*$", lambda m: m.group(1) + json.dumps(str(s.store)), text))
        s.restart()
        svc = Service(await connect(s, "vmem"))
        nc = await connect(s, "initech", "initech-pw")
        try:
            await svc.nc.subscribe("vmem.>", cb=svc._on)
            await svc.nc.flush()
            assert (await nc.request("vmem.initech.a.pager.turn", b"?", timeout=5)).data == b"answer to vmem.initech.a.pager.turn"
            assert request_tenant(svc.seen[-1].headers) == "initech"
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request("vmem.acme.a.pager.turn", b"?", timeout=5)
        finally:
            await nc.close()
            await svc.nc.close()
    finally:
        s.stop()
