"""Child processes for the NATS tests: `vmem serve`, workers and pipeline stages, their JSON lines collected."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest


def cli_module() -> str:
    """The module run as ``python -m`` for the `vmem` command."""
    return "vmem.cli"


class Proc:
    """A child process whose stdout lines (JSON with --json) are collected as they arrive."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None, stdin: bool = False) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args, cwd=cwd, stdout=subprocess.PIPE, stderr=None if os.environ.get("DBG") else subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, stdin=subprocess.PIPE if stdin else None,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True),
            *([threading.Thread(target=self._read, args=(self.proc.stderr, self.errors.append), daemon=True)] if self.proc.stderr else []),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line)

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """The first output object (old or new) for which `pred` holds."""
        for seen in self.seen:
            if pred(seen):
                return seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"{self.args[3:5]} exited with {self.proc.returncode}: {self.stderr()}")
                await anyio.sleep(0.01)
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.seen.append(obj)
            if pred(obj):
                return obj
        raise AssertionError(f"{self.args[3:5]}: nothing matched within {timeout} s; saw {self.seen}; stderr: {self.stderr()}")

    def send(self, text: str) -> None:
        """Write a line to the child's stdin (started with ``stdin=True``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait_for_sync(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """:meth:`wait_for` outside an event loop (module-scoped fixtures)."""
        return anyio.run(lambda: self.wait_for(pred, timeout))

    def drain(self) -> list[dict[str, Any]]:
        """Everything printed so far (as JSON objects)."""
        while not self.lines.empty():
            try:
                self.seen.append(json.loads(self.lines.get_nowait()))
            except ValueError:
                continue
        return self.seen

    def stderr(self) -> str:
        return "".join(self.errors)[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._finish()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._finish()
        return self.proc.returncode

    def _finish(self) -> None:
        self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def vmem_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", cli_module(), *args]


def start_serve(procs: list[Proc], url: str, home: Path, *extra: str, monitor: str, env: dict[str, str] | None = None) -> Proc:
    """`vmem serve --json` on `url`, its cache in `home`."""
    p = Proc(vmem_cmd("serve", "--nats", url, "--home", str(home), "--json", "--monitor", monitor, *extra), cwd=home.parent, env=env)
    procs.append(p)
    return p


def start_worker(procs: list[Proc], url: str, home: Path, *extra: str, env: dict[str, str] | None = None) -> Proc:
    """`vmem worker compressor --json --verbose` on `url`, its cache in `home`."""
    p = Proc(vmem_cmd("worker", "compressor", "--nats", url, "--home", str(home), "--json", "--verbose", *extra),
             cwd=home.parent, env=env)
    procs.append(p)
    return p


def ready(obj: dict[str, Any]) -> bool:
    return obj.get("event") == "ready"
