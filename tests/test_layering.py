"""The layering, checked on every run.

* Each subpackage imports only the subpackages its row of :data:`MAY_IMPORT`
  names (and itself): imports inside functions and under TYPE_CHECKING count
  too, so a cycle cannot hide behind a lazy import.  The table has no cycles.
* The library never imports the actors; only the hosts that start them (the
  embedded and distributed entry points, the CLI's opener) do.
* A log's ``append`` is called only by the actors' writer, by the log
  implementations themselves, and by the benchmarks of the log itself.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"vmem": ROOT / "vmem", "vmem.actors": ROOT / "actors", "vmem.schemas": ROOT / "schemas"}

# Bottom to top.  "vmem" is the package's own __init__ (the public names).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "schemas": {"errors"},
    "state": {"schemas", "errors"},
    "storage": {"state", "schemas", "errors"},
    "bus": {"state", "schemas", "errors"},
    "retrieval": {"storage", "state", "schemas", "errors"},
    "assembly": {"retrieval", "storage", "state", "schemas", "errors"},
    "paging": {"assembly", "retrieval", "storage", "state", "schemas", "errors"},
    "models": {"assembly", "retrieval", "schemas", "errors"},
    "agent": {"paging", "models", "assembly", "retrieval", "state", "schemas", "errors"},
    "nats": {"bus", "storage", "state", "schemas", "errors"},
    "client": {"agent", "paging", "models", "assembly", "bus", "state", "schemas", "errors"},
    "actors": {"agent", "paging", "models", "assembly", "retrieval", "storage", "nats", "bus", "state", "schemas", "errors"},
    "service": {"actors", "client", "agent", "paging", "models", "assembly", "retrieval", "storage", "nats", "bus",
                "state", "schemas", "errors"},
    "cli": {"service", "client", "agent", "paging", "models", "assembly", "retrieval", "storage", "nats", "bus",
            "state", "schemas", "errors"},
    "vmem": {"service", "client", "agent", "paging", "models", "assembly", "retrieval", "storage", "bus", "state",
             "schemas", "errors"},
}
APPENDERS = {
    "actors/writer.py",  # the one way actors append
    "vmem/storage/lmdb_log.py", "vmem/nats/jetstream_log.py",  # the logs
    "tools/bench_log.py", "tools/bench_scale.py",  # benchmarks of the logs themselves
    "tools/bench_recall.py",  # builds each question's namespace (the conversation as pages) in one append
}
_LOG_RECEIVER = re.compile(r"(^|\.|_)log_?$")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _layer(module: str) -> str | None:
    """The subpackage a dotted module name belongs to (None outside vmem)."""
    parts = module.split(".")
    if parts[0] != "vmem":
        return None
    return parts[1] if len(parts) > 1 else "vmem"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "vmem" and path.relative_to(folder).parts[0] in ("actors", "schemas"):
                continue
            rel = path.relative_to(folder).with_suffix("")
            out.append((".".join([package, *rel.parts]).removesuffix(".__init__"), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from vmem import errors` imports the errors module, not the package's public names.
            found += [(node.lineno, f"{target}.{a.name}") if target == "vmem" else (node.lineno, target) for a in node.names]
    return found


def test_every_subpackage_has_a_row_and_the_table_has_no_cycle():
    layers = {_layer(m) for m, _ in _modules()}
    assert layers <= set(MAY_IMPORT), f"add a row to MAY_IMPORT for {sorted(layers - set(MAY_IMPORT))}"
    try:
        order = list(TopologicalSorter(MAY_IMPORT).static_order())
    except CycleError as exc:  # pragma: no cover - only when someone edits the table into a cycle
        raise AssertionError(f"the layering table has a cycle: {exc.args[1]}") from None
    assert order.index("errors") < order.index("schemas") < order.index("state") < order.index("cli")


def test_each_subpackage_imports_only_what_its_row_allows():
    offenders = []
    for module, path in _modules():
        source = _layer(module)
        for line, target in _imports(module, path):
            layer = _layer(target)
            if layer is None or layer == source:
                continue
            if layer not in MAY_IMPORT[source]:
                offenders.append(f"{_rel(path)}:{line} ({source}) imports {target} ({layer})")
    assert offenders == []


def test_the_library_never_imports_the_actors():
    allowed = {layer for layer, row in MAY_IMPORT.items() if "actors" in row}
    assert allowed == {"service"}, "only the hosts in vmem.service start actors"


def test_the_import_check_resolves_what_it_checks(tmp_path: Path):
    """The layering check is not vacuous: relative, lazy and `from vmem import x` imports are all seen."""
    f = tmp_path / "m.py"
    f.write_text("from . import sibling\nfrom ..state import fold\ndef g():\n    from vmem import errors\n"
                 "    import vmem.actors.pager\n")
    got = [t for _line, t in _imports("vmem.paging.m", f)]
    assert got == ["vmem.paging", "vmem.state", "vmem.errors", "vmem.actors.pager"]
    assert [_layer(t) for t in got] == ["paging", "state", "errors", "actors"]


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


def test_the_append_check_finds_what_it_looks_for():
    """The append check is not vacuous: it flags the shapes a direct write takes."""
    for line in ("await self.home.log.append(ns, events)", "await log.append(ns, [e], key='k')", "home._log.append_sync(ns, r, None, None)"):
        call = ast.parse(line.replace("await ", "")).body[0].value  # type: ignore[attr-defined]
        assert _LOG_RECEIVER.search(ast.unparse(call.func.value)), line
    assert not _LOG_RECEIVER.search("events")
    assert not _LOG_RECEIVER.search("self.catalog")
