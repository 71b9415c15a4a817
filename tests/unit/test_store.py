"""The SQLCipher opener fails closed: never an empty store where a real one was expected."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from ibex.errors import ConfigError, StoreError, StoreKeyError
from ibex.store import generate_db_key_file, load_db_key, open_encrypted


@pytest.fixture()
def key(tmp_path: Path) -> bytes:
    return load_db_key(generate_db_key_file(tmp_path / "db.key"))


def _make(path: Path, key: bytes) -> None:
    conn = open_encrypted(path, key, create=True)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(200)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_round_trip_in_wal_mode(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "s.db"
    _make(db, key)
    conn = open_encrypted(db, key)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 200
    conn.close()
    assert b"row 1" not in db.read_bytes()


def test_wrong_key_fails_closed(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "s.db"
    _make(db, key)
    with pytest.raises(StoreKeyError, match="key is wrong"):
        open_encrypted(db, os.urandom(32))


def test_missing_store_is_not_created_silently(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_encrypted(tmp_path / "absent.db", key)
    assert not (tmp_path / "absent.db").exists()


def _create_together(path: str, key: bytes, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        open_encrypted(Path(path), key, create=True).close()
        results.put("ok")  # type: ignore[attr-defined]
    except StoreError as exc:
        results.put(exc.detail)  # type: ignore[attr-defined]


def test_workers_creating_one_store_at_once_all_open_it(tmp_path: Path, key: bytes) -> None:
    """A server's workers start together: none may find another's new file still empty and
    refuse it (it did, about one worker in two, before creation took the store's lock)."""
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for i in range(10):
        barrier, results = ctx.Barrier(4), ctx.Queue()
        path = str(tmp_path / f"store{i}.db")
        procs = [
            ctx.Process(target=_create_together, args=(path, key, barrier, results))
            for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        outcomes += [results.get(timeout=5) for _ in procs]
    assert outcomes == ["ok"] * 40


def test_plain_sqlite_file_is_refused(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "plain.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (v)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="plain, unencrypted"):
        open_encrypted(db, key)


@pytest.mark.parametrize("keep", [0, 100, 4096 + 100])
def test_truncated_or_empty_file_is_refused(tmp_path: Path, key: bytes, keep: int) -> None:
    db = tmp_path / "s.db"
    _make(db, key)
    data = db.read_bytes()
    db.write_bytes(data[:keep])
    with pytest.raises(StoreError):
        open_encrypted(db, key)


def test_corrupted_page_is_refused(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "s.db"
    _make(db, key)
    data = bytearray(db.read_bytes())
    data[len(data) - 100] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        open_encrypted(db, key)


def test_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no database key"):
        load_db_key(None, None)
    with pytest.raises(StoreKeyError, match="unset"):
        load_db_key(None, "IBEX_TEST_DB_KEY")
    monkeypatch.setenv("IBEX_TEST_DB_KEY", "ab" * 32)
    assert load_db_key(None, "IBEX_TEST_DB_KEY") == bytes([0xAB]) * 32
    monkeypatch.setenv("IBEX_TEST_DB_KEY", "xyz")
    with pytest.raises(StoreKeyError, match="64 hex digits"):
        load_db_key(None, "IBEX_TEST_DB_KEY")
    with pytest.raises(StoreKeyError, match="does not exist"):
        load_db_key(tmp_path / "nope.key")
    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    with pytest.raises(StoreKeyError, match="readable by group or others"):
        load_db_key(loose)


def test_key_file_is_0600_and_not_overwritten(tmp_path: Path) -> None:
    path = generate_db_key_file(tmp_path / "k")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(Exception, match="refusing to overwrite"):
        generate_db_key_file(path)
