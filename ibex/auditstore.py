"""Storage for the audit log: a small interface and its SQLCipher backend.

The tree lives in two tables: ``leaves`` (index, canonical JSON leaf or NULL once purged, expiry)
and ``nodes`` (the hash of every perfect subtree, leaf hashes included, keyed by
:func:`ibex.merkle.node_id`, which numbers nodes in the order appends complete them). The size of
the log is one past its last leaf index. An append reads the size and the right-edge "frontier"
of perfect subtrees inside ``BEGIN IMMEDIATE``, inserts the new leaves and the nodes they
complete, and commits with ``synchronous=FULL``: one transaction and one flush for a whole batch,
and several processes can share one file because the size and frontier are always read under the
write lock. New leaves and nodes land at the right edge of their tables, so a commit rewrites a
few pages rather than one per tree level. Checkpoints and witness cosignatures sit beside the
tree. A PostgreSQL backend would implement :class:`AuditStore` with the same transactions (a
lock on a row that stands for the log, taken before the size is read).

Schema 1 (nodes keyed ``level << 48 | index``, the size kept in ``meta``) is migrated on open, in
one transaction. Its ``size`` row is deleted, so a process still running the old code fails
closed on its next append instead of writing old-style keys into the new table.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlcipher3

from ibex.errors import AuditError, StoreError
from ibex.merkle import LEVEL_SHIFT, leaf_hash, node_count, node_hash, node_id, root_nodes
from ibex.store import Connection, open_encrypted
from ibex.writelock import WriteLock

SCHEMA_VERSION = "2"
_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, leaf BLOB,"
    " expires_at INTEGER NOT NULL, purged INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS leaves_expiry ON leaves (expires_at) WHERE purged = 0",
    "CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL,"
    " note TEXT NOT NULL, signed_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cosignatures (size INTEGER NOT NULL, witness TEXT NOT NULL,"
    " key_id BLOB NOT NULL, timestamp INTEGER NOT NULL, line TEXT NOT NULL,"
    " PRIMARY KEY (size, witness, key_id))",
)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    index: int
    leaf: bytes | None
    leaf_hash: bytes
    purged: bool


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: float


class AuditStore(Protocol):
    """What :class:`~ibex.auditlog.AuditLog` needs from a backend."""

    def append_leaves(
        self,
        leaves: Sequence[tuple[bytes, int]],
        before_commit: Callable[[], None] | None = None,
    ) -> list[tuple[int, bytes]]: ...
    def size(self) -> int: ...
    def node_hashes(self, ids: Iterable[int]) -> dict[int, bytes]: ...
    def entries(self, start: int, end: int) -> list[StoredEntry]: ...
    def purge_expired(self, now: float) -> int: ...
    def put_checkpoint(self, cp: StoredCheckpoint) -> None: ...
    def checkpoint_at(self, size: int) -> StoredCheckpoint | None: ...
    def latest_checkpoint(self) -> StoredCheckpoint | None: ...
    def checkpoints(self) -> list[StoredCheckpoint]: ...
    def add_cosignatures(self, size: int, rows: Sequence[tuple[str, bytes, int, str]]) -> None: ...
    def cosignature_lines(self, size: int) -> list[str]: ...
    def iter_leaves(self) -> Iterator[tuple[int, bytes | None, int, bool]]: ...
    def iter_level(self, level: int) -> Iterator[tuple[int, bytes]]: ...
    def close(self) -> None: ...


class SQLCipherAuditStore:
    """The embedded backend: one encrypted SQLCipher file in WAL mode."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        create: bool = False,
        synchronous: str = "FULL",
        verify_integrity: bool = True,
    ) -> None:
        self.path = Path(path)
        self._key = key
        self._sync = synchronous
        self._pid = os.getpid()
        self._write_lock = threading.Lock()
        # Several processes (gunicorn workers) append to one file: they queue on a kernel lock,
        # not in SQLite's busy handler, whose sleeping back-off cost the broker tens of
        # milliseconds per commit at eight concurrent queries (ibex.writelock).
        self._process_lock = WriteLock(self.path)
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._frontier: tuple[int, list[tuple[int, int, bytes]]] | None = None
        self._writer: Connection | None = self._open_writer(create, verify_integrity)

    # --- connections ------------------------------------------------------------------------

    def _open_writer(self, create: bool, verify_integrity: bool) -> Connection:
        conn = open_encrypted(
            self.path, self._key, create=create, synchronous=self._sync,
            verify_integrity=verify_integrity,
        )  # fmt: skip
        try:
            # Not around open_encrypted: creating a store takes this same lock (ibex.store).
            with self._process_lock.hold():
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _DDL:
                    conn.execute(stmt)
                row = conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] == "1":
                    self._migrate_from_1(conn)
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: audit store schema {row[0]} is not supported")
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate_from_1(self, conn: Connection) -> None:
        """Re-key schema-1 nodes (``level << 48 | index``) by :func:`node_id`; drop ``size``."""
        size = _size(conn)
        row = conn.execute("SELECT v FROM meta WHERE k = 'size'").fetchone()
        if row is None or int(row[0]) != size:
            raise StoreError(
                f"{self.path}: this schema-1 audit store records {row[0] if row else 'no'} entries"
                f" but holds {size}: it was altered; verify it with the release that wrote it"
            )
        conn.execute("CREATE TABLE nodes_2 (id INTEGER PRIMARY KEY, hash BLOB NOT NULL)")
        mask = (1 << LEVEL_SHIFT) - 1
        cur = conn.execute("SELECT id, hash FROM nodes ORDER BY id")
        while rows := cur.fetchmany(5000):
            rekeyed = [(node_id(int(i) >> LEVEL_SHIFT, int(i) & mask), h) for i, h in rows]
            _insert_rows(conn, "nodes_2 (id, hash)", rekeyed)
        conn.execute("DROP TABLE nodes")
        conn.execute("ALTER TABLE nodes_2 RENAME TO nodes")
        conn.execute("DELETE FROM meta WHERE k = 'size'")
        conn.execute("UPDATE meta SET v = ? WHERE k = 'schema'", (SCHEMA_VERSION,))

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            raise AuditError("an audit store cannot be used across fork(); open it in each process")

    def _reader(self) -> Connection:
        self._check_pid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_encrypted(
                self.path, self._key, synchronous=self._sync, verify_integrity=False
            )
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(self._reader().execute(sql, params).fetchall())
        except sqlcipher3.Error as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from None

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one ``BEGIN IMMEDIATE`` transaction; fail closed."""
        self._check_pid()
        with self._write_lock:
            try:
                if self._writer is None:  # a previous failure closed it; the disk may be back
                    self._writer = self._open_writer(False, False)
                conn = self._writer
                with self._process_lock.hold():
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn, *args)
                        conn.execute("COMMIT")
                    except BaseException:
                        self._frontier = None
                        try:
                            conn.execute("ROLLBACK")
                        except sqlcipher3.Error:
                            self._drop_writer()
                        raise
                return result
            except (sqlcipher3.Error, StoreError, OSError) as exc:
                self._drop_writer()
                detail = exc.detail if isinstance(exc, StoreError) else str(exc)
                raise AuditError(f"the audit log could not be written: {detail}") from None

    def _drop_writer(self) -> None:
        self._frontier = None
        if self._writer is not None:
            with contextlib.suppress(sqlcipher3.Error):
                self._writer.close()
            self._writer = None

    def close(self) -> None:
        with self._write_lock:
            self._drop_writer()
            self._process_lock.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # --- the tree ---------------------------------------------------------------------------

    def append_leaves(
        self,
        leaves: Sequence[tuple[bytes, int]],
        before_commit: Callable[[], None] | None = None,
    ) -> list[tuple[int, bytes]]:
        """Append leaves (bytes, expiry) in one durable transaction; return (index, hash)s.

        ``before_commit`` runs once the rows are in, just before ``COMMIT`` (the group commit
        wakes the previous batch's callers there; see :meth:`ibex.auditlog.AuditLog._lead`).
        """
        result: list[tuple[int, bytes]] = self._write(self._append, leaves, before_commit)
        return result

    def _append(
        self,
        conn: Connection,
        leaves: Sequence[tuple[bytes, int]],
        before_commit: Callable[[], None] | None = None,
    ) -> list[Any]:
        size = _size(conn)
        if self._frontier is not None and self._frontier[0] == size:
            frontier = list(self._frontier[1])
        else:
            wanted = root_nodes(size)
            found = _fetch(conn, [node_id(lv, i) for lv, i in wanted])
            if len(found) != len(wanted):
                raise StoreError("the stored tree is missing frontier nodes")
            frontier = [(lv, i, found[node_id(lv, i)]) for lv, i in wanted]
        # Keys follow completion order (ibex.merkle.node_id): the batch's nodes take the
        # consecutive keys from node_count(size), in exactly the order they are computed here.
        first_key = node_count(size)
        leaf_rows, hashes, out = [], [], []
        for leaf, expires in leaves:
            index, h = size, leaf_hash(leaf)
            leaf_rows.append((index, leaf, expires))
            hashes.append(h)
            out.append((index, h))
            level, pos = 0, index
            while frontier and frontier[-1][0] == level:
                h = node_hash(frontier.pop()[2], h)
                level, pos = level + 1, pos >> 1
                hashes.append(h)
            frontier.append((level, pos, h))
            size += 1
        _insert_rows(conn, "leaves (idx, leaf, expires_at)", leaf_rows)
        _insert_rows(conn, "nodes (id, hash)", list(enumerate(hashes, first_key)))
        self._frontier = (size, frontier)
        if before_commit is not None:
            before_commit()
        return out

    def size(self) -> int:
        try:
            return _size(self._reader())
        except sqlcipher3.Error as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from None

    def node_hashes(self, ids: Iterable[int]) -> dict[int, bytes]:
        try:
            return _fetch(self._reader(), list(ids))
        except sqlcipher3.Error as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from None

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries in ``[start, end)`` that have both their row and their leaf hash."""
        rows = [
            (int(i), leaf, bool(p))
            for i, leaf, p in self._read(
                "SELECT idx, leaf, purged FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            )
        ]
        hashes = self.node_hashes(node_id(0, i) for i, _, _ in rows)
        return [
            StoredEntry(i, leaf, hashes[node_id(0, i)], purged)
            for i, leaf, purged in rows
            if node_id(0, i) in hashes
        ]

    def purge_expired(self, now: float) -> int:
        def purge(conn: Connection) -> int:
            cur = conn.execute(
                "UPDATE leaves SET leaf = NULL, purged = 1 WHERE purged = 0 AND expires_at <= ?",
                (int(now),),
            )
            return int(cur.rowcount)

        count: int = self._write(purge)
        return count

    def iter_leaves(self) -> Iterator[tuple[int, bytes | None, int, bool]]:
        sql = "SELECT idx, leaf, expires_at, purged FROM leaves ORDER BY idx"
        cur = self._reader().execute(sql)
        for idx, leaf, expires, purged in cur:
            yield int(idx), leaf, int(expires), bool(purged)

    def iter_level(self, level: int) -> Iterator[tuple[int, bytes]]:
        """The stored nodes ``(level, k)`` of the tree at its current size, in order of ``k``."""
        width = self.size() >> level
        for start in range(0, width, 500):
            ids = [node_id(level, k) for k in range(start, min(width, start + 500))]
            found = self.node_hashes(ids)
            for k, nid in enumerate(ids, start):
                if nid in found:
                    yield k, found[nid]

    # --- checkpoints and cosignatures ---------------------------------------------------------

    def put_checkpoint(self, cp: StoredCheckpoint) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?)",
                (cp.size, cp.root, cp.note, cp.signed_at),
            )
        )

    def _checkpoints(self, where: str, params: Sequence[Any] = ()) -> list[StoredCheckpoint]:
        rows = self._read(f"SELECT size, root, note, signed_at FROM checkpoints {where}", params)  # noqa: S608
        return [StoredCheckpoint(int(s), bytes(r), str(n), float(t)) for s, r, n, t in rows]

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        found = self._checkpoints("WHERE size = ?", (size,))
        return found[0] if found else None

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        found = self._checkpoints("ORDER BY size DESC LIMIT 1")
        return found[0] if found else None

    def checkpoints(self) -> list[StoredCheckpoint]:
        return self._checkpoints("ORDER BY size")

    def add_cosignatures(self, size: int, rows: Sequence[tuple[str, bytes, int, str]]) -> None:
        self._write(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO cosignatures VALUES (?, ?, ?, ?, ?)",
                [(size, w, k, t, line) for w, k, t, line in rows],
            )
        )

    def cosignature_lines(self, size: int) -> list[str]:
        rows = self._read(
            "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness, key_id", (size,)
        )
        return [str(r[0]) for r in rows]


def _insert_rows(conn: Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: one statement step per chunk rather than per row.

    Each step releases and re-takes the GIL; with dozens of writer threads wanting it, a
    per-row ``executemany`` would leave the group-commit leader queueing for it once per row.
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, 3000 // width)  # well under SQLite's bound-parameter limit
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params = [v for row in chunk for v in row]
        conn.execute(f"INSERT INTO {table} VALUES {','.join([one] * len(chunk))}", params)  # noqa: S608


def _size(conn: Connection) -> int:
    """The number of entries: one past the last leaf index (an O(log n) look-up)."""
    last = conn.execute("SELECT max(idx) FROM leaves").fetchone()[0]
    return 0 if last is None else int(last) + 1


def _fetch(conn: Connection, ids: list[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for nid, h in conn.execute(f"SELECT id, hash FROM nodes WHERE id IN ({marks})", chunk):  # noqa: S608
            out[int(nid)] = bytes(h)
    return out
