"""The SQLCipher opener: every encrypted store in IBEX is opened here, and fails closed.

The key comes from a key file (64 hex digits, mode 0600) or an environment variable, never from
source or a default. A wrong key, a missing key, a plain SQLite file, a truncated or corrupt file
each raise a clear :class:`~ibex.errors.StoreError`; none is ever mistaken for an empty store.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

import sqlcipher3

from ibex.errors import ConfigError, KeyFileError, StoreError, StoreKeyError
from ibex.keys import read_secret_file
from ibex.writelock import WriteLock

SQLITE_PLAIN_HEADER = b"SQLite format 3\x00"
KEY_BYTES = 32

Connection = Any  # sqlcipher3.dbapi2.Connection has no type stubs


def generate_db_key_file(path: Path, *, overwrite: bool = False) -> Path:
    """Write a fresh random 256-bit database key as hex to ``path`` with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a database key") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _parse_key(text: str, where: str) -> bytes:
    text = text.strip()
    if len(text) != 2 * KEY_BYTES:
        raise StoreKeyError(f"the database key in {where} must be {2 * KEY_BYTES} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise StoreKeyError(f"the database key in {where} is not hexadecimal") from None


def load_db_key(key_file: Path | None = None, env_var: str | None = None) -> bytes:
    """The raw 32-byte database key, from ``key_file`` or else the environment variable.

    Both unset, or set but empty, is an error: there is no default key.
    """
    if key_file is not None:
        try:
            data = read_secret_file(key_file, what="database key file", max_bytes=256)
        except KeyFileError as exc:
            raise StoreKeyError(exc.detail) from None
        return _parse_key(data.decode("ascii", "replace"), str(key_file))
    if env_var:
        value = os.environ.get(env_var, "")
        if not value:
            raise StoreKeyError(f"environment variable {env_var} holding the database key is unset")
        return _parse_key(value, f"environment variable {env_var}")
    raise ConfigError("no database key configured: set a key file or a key environment variable")


def open_encrypted(
    path: Path,
    key: bytes,
    *,
    create: bool = False,
    synchronous: str = "FULL",
    check_same_thread: bool = False,
    timeout: float = 30.0,
    verify_integrity: bool = True,
) -> Connection:
    """Open (or, with ``create``, create) an encrypted SQLCipher database in WAL mode.

    Creation is serialised across processes on the store's lock file (:mod:`ibex.writelock`):
    a server's workers start together, and SQLite writes a new file's header only on its first
    write, so a second worker used to find the first one's file still empty and refuse it."""
    if len(key) != KEY_BYTES:
        raise StoreKeyError(f"a database key is {KEY_BYTES} bytes")
    if synchronous not in {"FULL", "NORMAL", "EXTRA"}:
        raise ConfigError("synchronous must be FULL, NORMAL or EXTRA")
    args = (path, key, synchronous, check_same_thread, timeout, verify_integrity)
    if not create:
        return _open(*args, create=False)
    lock = WriteLock(path)
    try:
        with lock.hold():
            return _open(*args, create=True)
    except OSError as exc:
        raise StoreError(f"cannot open encrypted store {path}: {exc.strerror}") from None
    finally:
        lock.close()


def _open(
    path: Path,
    key: bytes,
    synchronous: str,
    check_same_thread: bool,
    timeout: float,
    verify_integrity: bool,
    *,
    create: bool,
) -> Connection:
    exists = path.exists()
    if not exists and not create:
        raise StoreError(f"encrypted store {path} does not exist")
    if exists:
        _check_header(path)
    try:
        conn = sqlcipher3.connect(
            str(path), timeout=timeout, check_same_thread=check_same_thread, isolation_level=None
        )
    except sqlcipher3.Error as exc:
        raise StoreError(f"cannot open encrypted store {path}: {exc}") from None
    try:
        # A wrong key is reported once, by us, not as SQLCipher's log lines on stderr.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        # Plaintext never spills to temporary files: sorts and temp tables stay in memory.
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError:
            raise StoreKeyError(
                f"cannot decrypt {path}: the key is wrong or the file is corrupt or truncated"
            ) from None
        if exists and verify_integrity:
            integrity = conn.execute("PRAGMA cipher_integrity_check").fetchall()
            if integrity:
                raise StoreError(
                    f"{path} failed the SQLCipher integrity check ({len(integrity)} problem(s)):"
                    " the file is corrupt, truncated or was altered"
                )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL mode")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise StoreError(f"cannot read encrypted store {path}: {exc.strerror}") from None
    if size == 0:
        raise StoreError(f"{path} is empty: refusing to treat it as a new store")
    if head == SQLITE_PLAIN_HEADER:
        raise StoreError(f"{path} is a plain, unencrypted SQLite file: refusing to use it")
    if size < 1024:
        raise StoreError(f"{path} is truncated ({size} bytes)")


class ConnectionPerThread:
    """One SQLCipher connection per thread, for stores read by several request threads."""

    def __init__(self, path: Path, key: bytes, **kwargs: Any) -> None:
        self._path = path
        self._key = key
        self._kwargs = kwargs
        self._local = threading.local()

    def get(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_encrypted(self._path, self._key, **self._kwargs)
            self._local.conn = conn
        return conn
