"""The layering, checked on every run: the library never imports the actors; only actors append to a log.

* The library (vmem's modules, but for the hosts that start actors: the
  embedded and distributed entry points and the CLI) imports nothing from
  ``vmem.actors``.
* A log's ``append`` is called only by the actors' writer, by the log
  implementations themselves, and by the benchmarks of the log itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS = {"vmem/__init__.py", "vmem/service/vmem.py", "vmem/service/distributed.py", "vmem/cli/main.py"}
APPENDERS = {
    "actors/writer.py",  # the one way actors append
    "vmem/storage/lmdb_log.py", "vmem/nats/jetstream_log.py",  # the logs
    "tools/bench_log.py", "tools/bench_scale.py",  # benchmarks of the logs themselves
}
_LOG_RECEIVER = re.compile(r"(^|\.|_)log_?$")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_library_never_imports_the_actors():
    offenders = []
    for path in _sources("vmem"):
        if _rel(path) in HOSTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{_rel(path)}:{node.lineno} imports {n}" for n in names if n.startswith(("vmem.actors", "actors"))]
    assert offenders == []


def test_only_actors_append_to_a_log():
    offenders = []
    for path in _sources("vmem", "actors", "tools", "examples"):
        if _rel(path) in APPENDERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("append", "append_sync")
                    and _LOG_RECEIVER.search(ast.unparse(node.func.value))):
                offenders.append(f"{_rel(path)}:{node.lineno} {ast.unparse(node)[:80]}")
    assert offenders == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path):
    """The append check is not vacuous: it flags the shapes a direct write takes."""
    for line in ("await self.home.log.append(ns, events)", "await log.append(ns, [e], key='k')", "home._log.append_sync(ns, r, None, None)"):
        call = ast.parse(line.replace("await ", "")).body[0].value  # type: ignore[attr-defined]
        assert _LOG_RECEIVER.search(ast.unparse(call.func.value)), line
    assert not _LOG_RECEIVER.search("events")
    assert not _LOG_RECEIVER.search("self.catalog")
