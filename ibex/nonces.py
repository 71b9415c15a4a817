"""A durable nonce store: each nonce is accepted once within its validity window.

Shared by every gunicorn worker (one SQLCipher file, a primary-key insert decides the race) and
kept across restarts. Entries are pruned once their message has expired, since the time-window
check refuses any message older than that anyway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import sqlcipher3

from ibex.errors import ReplayError, StoreError
from ibex.store import open_encrypted
from ibex.writelock import WriteLock

PRUNE_EVERY = 1000


class NonceStore:
    """``remember(scope, nonce, expires_at)`` raises :class:`ReplayError` on a second sight."""

    def __init__(self, path: Path, key: bytes, *, synchronous: str = "FULL") -> None:
        self._conn = open_encrypted(path, key, create=True, synchronous=synchronous)
        self._lock = threading.Lock()
        self._write_lock = WriteLock(path)  # the workers of one server queue here, not in SQLite
        self._count = 0
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces ("
                " scope TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,"
                " PRIMARY KEY (scope, nonce)) WITHOUT ROWID"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires)")

    def remember(self, scope: str, nonce: str, expires_at: float) -> None:
        with self._lock:
            try:
                with self._write_lock.hold():
                    self._conn.execute(
                        "INSERT INTO nonces (scope, nonce, expires) VALUES (?, ?, ?)",
                        (scope, nonce, expires_at),
                    )
            except sqlcipher3.IntegrityError:
                raise ReplayError(f"this nonce from {scope} was already used") from None
            except (sqlcipher3.Error, OSError) as exc:
                raise StoreError(f"the nonce store cannot record: {exc}") from None
            self._count += 1
            if self._count % PRUNE_EVERY == 0:
                # Pruning is housekeeping: the nonce is recorded, so a failure here is not the
                # caller's; the next prune tries again.
                with contextlib.suppress(sqlcipher3.Error, OSError), self._write_lock.hold():
                    self._conn.execute(
                        "DELETE FROM nonces WHERE expires < ?", (time.time() - 3600,)
                    )

    def seen(self, scope: str, nonce: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM nonces WHERE scope = ? AND nonce = ?", (scope, nonce)
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._write_lock.close()
