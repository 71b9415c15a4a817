"""One writer at a time across processes, without SQLite's sleeping back-off.

When a SQLite database is locked by another process, the waiting connection's busy handler sleeps
and retries with a growing back-off (1, 2, 5, 10, ... up to 100 ms a try). With several gunicorn
workers writing one nonce store or one audit log, that back-off — not the work — dominated a
query's latency under load (tens of milliseconds per transaction at eight concurrent queries). A
kernel lock (``flock``) on a sidecar file queues the writers instead and wakes the next one the
moment the lock is released.

The lock file is empty and sits next to the database (``<database>.lock``, mode 0600). Hold the
lock around the whole write transaction (``BEGIN IMMEDIATE`` to ``COMMIT``); SQLite's own locking
still protects the database, so a writer that does not take this lock is slower, never unsafe.
The lock is not re-entrant: never open or create a store (which takes its lock, see
:func:`ibex.store.open_encrypted`) while holding that store's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path


class WriteLock:
    """An exclusive lock shared by every process (and thread) that writes one database."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._pid = -1
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def _for_this_process(self) -> None:
        # After fork() the child must not use the parent's descriptor (it would share the
        # parent's lock) nor its thread lock (it may have been copied while held). A child starts
        # with one thread, so this runs before any other thread of the child can race it.
        if self._pid != os.getpid():
            self._thread_lock = threading.Lock()
            self._fd = None
            self._pid = os.getpid()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for the lock (threads of this process first, then other processes)."""
        self._for_this_process()
        with self._thread_lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._for_this_process()
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
