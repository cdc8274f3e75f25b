"""One LMDB environment per home, with a map that grows instead of failing."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import lmdb

from vmem.errors import HomeError

T = TypeVar("T")

_INITIAL_MAP = 64 * 2**20
_MAX_DBS = 16


class LmdbEnv:
    """An LMDB environment whose write transactions grow the map on demand.

    Writes are durable on return (``sync=True``: LMDB fsyncs the data and meta
    pages at commit), so an acknowledged write survives kill -9 and power loss;
    ``durable=False`` (a cache) skips the fsync, and after a crash keeps a
    consistent, possibly older, state.
    Several processes may open one environment: LMDB serialises their writers.
    """

    def __init__(self, path: Path, *, readonly: bool = False, durable: bool = True) -> None:
        self.path = path
        try:
            self.env = lmdb.open(
                str(path),
                map_size=_INITIAL_MAP,
                max_dbs=_MAX_DBS,
                subdir=True,
                # A cache of a log kept elsewhere need not survive power loss (it is
                # rebuilt from the log); unsynced commits keep its turns off the disk's latency.
                sync=durable,
                metasync=durable,
                readonly=readonly,
                create=not readonly,
                lock=True,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise HomeError(f"cannot open the store at {path}: {exc}; is this a vmem home?") from None
        self._dbs: dict[bytes, object] = {}
        # Resizing the map invalidates every transaction this process has open
        # (py-lmdb closes them), so transactions hold this lock shared and a
        # resize takes it exclusively.  Appends run on a worker thread while
        # reads run on the event loop's, so this is a real race, not paranoia.
        self._rw = _SharedExclusive()

    def db(self, name: str):  # -> lmdb._Database
        key = name.encode()
        db = self._dbs.get(key)
        if db is None:
            db = self._dbs[key] = self.env.open_db(key)
        return db

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fn` in one write transaction, committed durably; retried after a map resize."""
        return self._run(fn, write=True)

    def read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run `fn` in one read transaction (a consistent snapshot)."""
        return self._run(fn, write=False)

    def _run(self, fn: Callable[[lmdb.Transaction], T], *, write: bool) -> T:
        while True:
            try:
                with self._rw.shared(), self.env.begin(write=write, buffers=False) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                seen = self.env.info()["map_size"]
                with self._rw.exclusive():
                    if self.env.info()["map_size"] == seen:  # not already grown by another thread
                        self.env.set_mapsize(seen * 2)
            except lmdb.MapResizedError:
                # Another process grew the map: adopt its size and retry.
                with self._rw.exclusive():
                    self.env.set_mapsize(0)

    def close(self) -> None:
        self.env.close()


class _SharedExclusive:
    """A readers-writer lock: many holders of `shared`, or one of `exclusive`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._shared:
                self._cond.wait()
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
