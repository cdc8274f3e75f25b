"""kill -9 in the middle of appends: nothing acknowledged is lost, nothing is half-written.

A child process appends batches and prints each acknowledgement the moment
``append`` returns; the parent SIGKILLs it at seeded random points, checks the
log against every acknowledgement it saw, and runs the child again, which
resumes by retrying every batch with its idempotency key.  Then the real
``vmem ingest`` is killed mid-document, replayed, and resumed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vmem.storage.lmdb_log import LmdbLog

ROOT = Path(__file__).resolve().parents[1]
NS = "crash/agent"
BATCHES = 2000

# Shared by the child (which appends these batches) and the parent (which checks them).
BATCH_SOURCE = textwrap.dedent(
    """
    from vmem.schemas.events import BlockWritten, EdgeAdded, PageLoaded

    def make_batch(ns, b):
        size = 3 + b % 11  # batches of different sizes make a torn batch visible
        out = []
        for i in range(size):
            bid = f"b{b}-{i}"
            if i % 3 == 2:
                out.append(EdgeAdded(ns=ns, src=bid, dst=f"b{b}-{i - 1}", kind="follows"))
            elif i % 5 == 4:
                out.append(PageLoaded(ns=ns, block_id=f"b{b}-0", turn=b))
            else:
                text = f"batch {b} event {i} " + "the quick brown fox jumps over the lazy dog " * 22
                out.append(BlockWritten(ns=ns, block_id=bid, kind="page", role="document", text=text))
        return out
    """
)
_shared: dict = {}
exec(BATCH_SOURCE, _shared)
make_batch = _shared["make_batch"]

DRIVER = BATCH_SOURCE + textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from vmem.storage.lmdb_log import LmdbLog

    async def main(path, ns, batches):
        log = LmdbLog.open(Path(path))
        for b in range(batches):
            r = await log.append(ns, make_batch(ns, b), key=f"batch:{b}")
            # Acknowledged: the append returned, so it must survive kill -9.
            sys.stdout.write(f"{b} {r.first_seq} {r.last_seq} {int(r.duplicate)}\\n")
            sys.stdout.flush()
        await log.aclose()

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


def _check_log(path: Path, acked: dict[int, tuple[int, int]]) -> int:
    """Assert the log holds every acknowledged batch, whole, and nothing torn; return batches stored."""
    log = LmdbLog.open(path)
    try:
        stored = log.read_sync(NS, limit=10**9)
        for b, (first, last) in acked.items():
            got = log.read_sync(NS, after=first - 1, limit=last - first + 1)
            assert [s.seq for s in got] == list(range(first, last + 1)), f"batch {b} lost"
            assert [s.event for s in got] == make_batch(NS, b), f"batch {b} differs"
        # The log is a run of whole batches 0..m-1 in order: no torn batch, no gap.
        pos = m = 0
        while pos < len(stored):
            want = make_batch(NS, m)
            assert [s.event for s in stored[pos : pos + len(want)]] == want, f"batch {m} torn or out of order"
            pos += len(want)
            m += 1
        assert log.last_seq_sync(NS) == (stored[-1].seq if stored else 0)
    finally:
        log.close()
    top = max(acked, default=-1)
    # Everything acknowledged, plus at most the one append in flight at the kill.
    assert top + 1 <= m <= top + 2
    return m


def _record_acks(lines: list[str], acked: dict[int, tuple[int, int]]) -> int:
    """Fold the child's acknowledgement lines into `acked`; return how many were new commits."""
    new = 0
    for line in lines:
        b, first, last, dup = map(int, line.split())
        if b in acked:
            # A retry of a committed batch names the sequences of its first commit.
            assert dup and acked[b] == (first, last), f"batch {b} committed twice"
        else:
            new += not dup
            acked[b] = (first, last)
    return new


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    path = tmp_path / "log"
    cmd = [sys.executable, str(driver), str(path), NS, str(BATCHES)]
    acked: dict[int, tuple[int, int]] = {}
    kills = 0
    for _ in range(4):
        stop_after = rng.randrange(15, 250)  # new commits to wait for before the kill
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        assert child.stdout is not None
        lines: list[str] = []
        try:
            new = 0
            while new < stop_after:
                line = child.stdout.readline()
                assert line.endswith("\n"), f"driver ended after {len(lines)} acknowledgements"
                lines.append(line)
                new += line.split()[3] == "0"
            # Let the next append get somewhere between starting and committing.
            time.sleep(rng.uniform(0, 0.004))
            os.kill(child.pid, signal.SIGKILL)
            # Lines the child wrote before it died are acknowledgements too.
            lines += child.stdout.readlines()
        finally:
            child.kill()
            child.stdout.close()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        kills += 1
        _record_acks([line for line in lines if line.endswith("\n")], acked)
        stored = _check_log(path, acked)
        assert stored >= len(acked)

    # A last run resumes from the start and finishes: every batch committed exactly once.
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines(keepends=True)
    assert [int(line.split()[0]) for line in lines] == list(range(BATCHES))
    before = dict(acked)
    _record_acks(lines, acked)
    assert all(acked[b] == before[b] for b in before)
    assert _check_log(path, acked) == BATCHES
    assert kills == 4


# -- the real CLI -------------------------------------------------------------------


def _vmem(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmem.cli", "--home", str(home), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )


def _write_document(path: Path) -> None:
    rng = random.Random(7)
    words = (
        "alpha beta gamma delta memory page fault token context virtual paging eviction "
        "summary ledger river mountain harbour lantern copper orchard"
    ).split()
    with path.open("w") as f:
        for s in range(800):
            f.write(f"# Section {s}\n\n")
            for _ in range(5):
                f.write(" ".join(rng.choice(words) for _ in range(100)) + ".\n\n")


def _replay(home: Path) -> dict:
    r = _vmem(home, "replay", "--ns", NS, "--verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.splitlines()[-1])
    assert report["equal"] is True, report
    return report


def test_cli_ingest_survives_sigkill_and_resumes(tmp_path: Path) -> None:
    doc = tmp_path / "long.md"
    _write_document(doc)
    ingest = ["ingest", str(doc), "--ns", NS, "--page-tokens", "64", "--json"]
    home = tmp_path / "home"
    assert _vmem(home, "init").returncode == 0

    child = subprocess.Popen(
        [sys.executable, "-m", "vmem.cli", "--home", str(home), *ingest],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    log = LmdbLog.open(home / "store")
    try:
        deadline = time.monotonic() + 30
        # Wait (bounded) until the first batch is committed, then kill somewhere in the next ones.
        while log.last_seq_sync(NS) == 0:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "ingest committed nothing in 30 s"
            time.sleep(0.01)
        time.sleep(random.Random(3).uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, "ingest finished before the kill; use a longer document"
        partial = log.last_seq_sync(NS)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        log.close()

    # What the killed ingest committed replays to the live state.
    report = _replay(home)
    assert report["events"] == partial

    resumed = _vmem(home, *ingest)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.splitlines()[-1])
    final = _replay(home)
    assert final["events"] == result["events"] > partial

    # The killed-and-resumed home folds to exactly the state of an uninterrupted ingest.
    clean = tmp_path / "clean"
    assert _vmem(clean, "init").returncode == 0
    first_try = _vmem(clean, *ingest)
    assert first_try.returncode == 0, first_try.stderr
    assert json.loads(first_try.stdout.splitlines()[-1]) | {"duplicate": False} == result | {"duplicate": False}
    assert _replay(clean)["state_hash"] == final["state_hash"]


pytestmark = pytest.mark.timeout(120)
