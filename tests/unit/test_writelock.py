"""The cross-process write lock that queues a server's workers on one database."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path

from ibex.writelock import WriteLock


def _hold_for(database: str, seconds: float, ready: object) -> None:
    lock = WriteLock(Path(database))
    with lock.hold():
        ready.set()  # type: ignore[attr-defined]
        time.sleep(seconds)


def test_a_second_process_waits_until_the_first_releases(tmp_path: Path) -> None:
    database = tmp_path / "nonces.db"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_for, args=(str(database), 0.4, ready))
    child.start()
    try:
        assert ready.wait(10)
        lock = WriteLock(database)
        started = time.monotonic()
        with lock.hold():
            waited = time.monotonic() - started
        lock.close()
    finally:
        child.join(10)
    assert 0.2 < waited < 5.0
    assert child.exitcode == 0


def test_a_forked_child_takes_its_own_lock(tmp_path: Path) -> None:
    # The parent has opened the lock file; a child that reused the inherited descriptor would
    # share the parent's lock and walk straight in while the parent holds it.
    database = tmp_path / "audit.db"
    lock = WriteLock(database)
    with lock.hold():
        pass
    ctx = multiprocessing.get_context("fork")
    entered = ctx.Event()

    def child() -> None:
        with lock.hold():
            entered.set()

    with lock.hold():
        proc = ctx.Process(target=child)
        proc.start()
        assert not entered.wait(0.3)
    assert entered.wait(10)
    proc.join(10)
    assert proc.exitcode == 0
    lock.close()


def test_the_lock_file_is_private_and_empty(tmp_path: Path) -> None:
    database = tmp_path / "nonces.db"
    lock = WriteLock(database)
    with lock.hold():
        pass
    mode = stat.S_IMODE(os.stat(lock.path).st_mode)
    assert lock.path == tmp_path / "nonces.db.lock"
    assert mode & 0o077 == 0
    assert lock.path.stat().st_size == 0
    lock.close()
