"""LmdbLog: the shared Log conformance suite, and what only LMDB can get wrong.

The suite runs under asyncio and trio.  The LMDB-specific tests cover a map
that must grow instead of failing, corruption found by the record checksum,
a batch that fails half-way, and two processes appending to one file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from conformance.log_suite import LogConformance, events_for, read_everything

from vmem.errors import CorruptRecord
from vmem.schemas import events as ev
from vmem.schemas.codec import encode_record
from vmem.storage.lmdb_env import _INITIAL_MAP
from vmem.storage.lmdb_log import LmdbLog
from vmem.storage.log import Log

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
async def log(log_path: Path) -> AsyncIterator[LmdbLog]:
    opened = LmdbLog.open(log_path)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def reopen(log_path: Path) -> AsyncIterator[Callable[[], Awaitable[Log]]]:
    opened: list[LmdbLog] = []

    async def _reopen() -> Log:
        opened.append(LmdbLog.open(log_path))
        return opened[-1]

    try:
        yield _reopen
    finally:
        for each in opened:
            await each.aclose()


class TestLmdbLogConformance(LogConformance):
    """The shared suite against LmdbLog, under asyncio and trio."""


asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def big_block(ns: str, i: int, size: int) -> ev.BlockWritten:
    # Incompressible-looking text so no layer can cheat on size.
    text = (f"{i:08d}" + "".join(chr(0x41 + (i * 7 + k * 13) % 26) for k in range(56))) * (size // 64)
    return ev.BlockWritten(ns=ns, block_id=f"big{i}", kind="page", role="document", text=text)


# -- the map grows ---------------------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_map_grows_instead_of_failing(log: LmdbLog, log_path: Path) -> None:
    ns = "grow/a"
    size = 2**20
    appended: list[ev.Event] = []
    # 5 batches of 16 x 1 MiB: 80 MiB, beyond the initial 64 MiB map.
    for b in range(5):
        batch = [big_block(ns, b * 16 + i, size) for i in range(16)]
        await log.append(ns, batch, key=f"b{b}")
        appended += batch
    assert log._env.env.info()["map_size"] > _INITIAL_MAP
    stored = await read_everything(log, ns, page=8)
    assert [s.event for s in stored] == appended
    # A fresh handle opens the grown file and keeps appending.
    await log.aclose()
    again = LmdbLog.open(log_path)
    try:
        r = await again.append(ns, events_for(ns, 2))
        assert r.first_seq == len(appended) + 1
        assert len(await read_everything(again, ns, page=8)) == len(appended) + 2
    finally:
        again.close()


@pytest.mark.anyio
@asyncio_only
async def test_reads_during_map_growth(log: LmdbLog) -> None:
    ns = "grow/read"
    await log.append(ns, [ev.ErrorRaised(ns=ns, turn=i, where="w", code="c", message="m" * 100) for i in range(20_000)])
    done = anyio.Event()

    async def reader() -> None:
        # A follower or a view catching up reads on the event loop while an append grows the map.
        while not done.is_set():
            assert len(await log.read(ns, limit=100_000)) == 20_000
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        for b in range(10):  # 80 MiB: past the initial map
            await log.append("grow/other", [big_block("grow/other", b * 8 + i, 2**20) for i in range(8)])
        done.set()


# -- corruption --------------------------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "checksum": lambda d: _flip(d, 0),
    "version": lambda d: _flip(d, 5),
    "payload-first": lambda d: _flip(d, 6),
    "payload-middle": lambda d: _flip(d, len(d) // 2),
    "payload-last": lambda d: _flip(d, len(d) - 1),
    "truncated": lambda d: d[: len(d) - 3],
    "header-only": lambda d: d[:6],
    "empty": lambda d: b"",
}


@pytest.mark.anyio
@asyncio_only
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
async def test_corrupt_record_is_named_by_sequence(log: LmdbLog, how: str) -> None:
    ns = "bad/disk"
    await log.append("bad/other", events_for("bad/other", 2))
    r = await log.append(ns, events_for(ns, 5))
    good = await log.read(ns)
    victim = r.first_seq + 2
    raw = log.raw_record(ns, victim)
    assert raw is not None
    log.put_raw_record(ns, victim, CORRUPTIONS[how](raw))

    with pytest.raises(CorruptRecord) as info:
        await log.read(ns)
    assert info.value.sequence == victim
    assert f"sequence {victim}" in str(info.value)
    # Around the damage the log still reads, and other namespaces are untouched.
    assert await log.read(ns, limit=2) == good[:2]
    assert await log.read(ns, after=victim) == good[3:]
    assert len(await log.read("bad/other")) == 2
    # Restoring the bytes heals it: the check is of the bytes, not a sticky flag.
    log.put_raw_record(ns, victim, raw)
    assert await log.read(ns) == good


# -- a batch that fails half-way --------------------------------------------------


@pytest.mark.anyio
@asyncio_only
async def test_batch_failing_midway_commits_nothing(log: LmdbLog) -> None:
    ns = "half/way"
    r = await log.append(ns, events_for(ns, 2))
    # Occupy the key the batch's third event would take, as a damaged
    # sequence counter would: the write refuses to overwrite it mid-batch.
    planted = encode_record(events_for(ns, 1, tag="planted")[0])
    log.put_raw_record(ns, r.last_seq + 3, planted)
    with pytest.raises(CorruptRecord) as info:
        await log.append(ns, events_for(ns, 5, tag="batch"), key="k")
    assert info.value.sequence == r.last_seq + 3
    # Neither the first two events, nor the head, nor the key were committed.
    assert log.raw_record(ns, r.last_seq + 1) is None
    assert log.raw_record(ns, r.last_seq + 2) is None
    assert await log.last_seq(ns) == r.last_seq
    assert [s.seq for s in await log.read(ns)] == [r.first_seq, r.last_seq, r.last_seq + 3]


# -- two processes ----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import anyio

    from vmem.storage.lmdb_log import LmdbLog
    from vmem.schemas.events import BlockWritten, ErrorRaised

    path, name, batches, big = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def batch(ns, j):
        out = [ErrorRaised(ns=ns, turn=j, where=name, code=str(k), message=f"{name} {j} {k}") for k in range(3)]
        if big:
            text = (f"{name}{j:06d}" * (big // 8 + 1))[:big]
            out.append(BlockWritten(ns=ns, block_id=f"{name}-{j}", kind="page", role="document", text=text))
        return out

    async def main():
        log = LmdbLog.open(Path(path))
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for j in range(batches):
            ns = "mp/shared" if j % 2 == 0 else f"mp/{name}"
            r = await log.append(ns, batch(ns, j), key=f"{name}-{j}")
            print(json.dumps([ns, j, r.first_seq, r.last_seq, r.duplicate]), flush=True)
        await log.aclose()

    anyio.run(main)
    """
)


def _run_writers(path: Path, tmp_path: Path, batches: int, big: int) -> dict[str, list[list]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    LmdbLog.open(path).close()  # create the environment before both race to
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(path), name, str(batches), str(big)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for name in ("p0", "p1")
    }
    try:
        for p in procs.values():
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs.values():
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = {}
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr
            out[name] = [json.loads(line) for line in stdout.splitlines()]
        return out
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_writers(path: Path, results: dict[str, list[list]], batches: int) -> None:
    log = LmdbLog.open(path)
    try:
        ranges = []
        for name, lines in results.items():
            assert [line[1] for line in lines] == list(range(batches))
            for ns, j, first, last, duplicate in lines:
                assert not duplicate
                stored = log.read_sync(ns, after=first - 1, limit=last - first + 1)
                assert [s.seq for s in stored] == list(range(first, last + 1))
                assert all(s.event.ns == ns and s.event.block_id == f"{name}-{j}" for s in stored if isinstance(s.event, ev.BlockWritten))
                assert [s.event.message for s in stored if isinstance(s.event, ev.ErrorRaised)] == [f"{name} {j} {k}" for k in range(3)]
                ranges.append((first, last))
        ranges.sort()
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])), "overlapping sequences"
        total = sum(last - first + 1 for first, last in ranges)
        # Nothing but these batches, each once, in every namespace; every record passes its checksum.
        every = sum(len(log.read_sync(ns, limit=10**9)) for ns in ("mp/shared", "mp/p0", "mp/p1"))
        assert every == total == ranges[-1][1]
        assert {ns: log.last_seq_sync(ns) for ns in ("mp/p0", "mp/p1")} == {
            f"mp/{name}": max(line[3] for line in lines if line[0] == f"mp/{name}") for name, lines in results.items()
        }
    finally:
        log.close()


def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    results = _run_writers(path, tmp_path, batches=300, big=0)
    _check_writers(path, results, 300)
    # Both processes interleaved in the shared namespace (they really ran at once).
    shared = LmdbLog.open(path)
    try:
        writers = [s.event.where for s in shared.read_sync("mp/shared", limit=10**9)]
    finally:
        shared.close()
    switches = sum(a != b for a, b in zip(writers, writers[1:]))
    assert switches >= 2, "the two writers did not overlap"


def test_two_processes_grow_the_map_together(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    # 2 x 60 batches x ~600 KB: ~70 MiB, past the initial map while both write.
    results = _run_writers(path, tmp_path, batches=60, big=600_000)
    _check_writers(path, results, 60)
