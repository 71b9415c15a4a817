"""The connector's encrypted record store: one SQLCipher file per agency connector.

Every record is validated against the shared entity schema on the way in and stored whole (its
JSON body, including the ``record`` metadata the schemas model: ``source_id``, ``handling``,
``updated_at``), keyed by (entity type, source id) so that importing the same record again
updates it. Two indexes make matching cheap without ever reading bodies:

* ``idents`` — exact identifiers, normalised (see :mod:`connectors.normalise`): scheme, value,
  country. Document number + issuing country, VIN, plate + country, IMO, MMSI, call sign,
  container number, bill of lading, registration number, alert and crossing ids.
* ``names`` / ``name_keys`` — every name of every person (primary name and aliases) in folded
  and ASCII forms with the date of birth, plus blocking keys (phonetic keys) by year and by
  month-and-day of birth, so that a lookup with a date of birth reads only the few index
  entries the date rules could accept.

The store is a small interface (:class:`RecordStorage`); :class:`RecordStore` is the SQLCipher
implementation. A PostgreSQL backend (DESIGN §7) would be another class with the same methods.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from connectors._indexing import Prepared, prepare_index
from ibex.errors import FieldError, SchemaValidationError, StoreError, UnknownSchema
from ibex.schemas import SchemaRegistry, registry
from ibex.store import Connection, open_encrypted

LAYOUT_VERSION = "1"
FLUSH_ROWS = 2000
WRITE_CACHE_KIB = 65536
READ_CACHE_KIB = 16384
_SQL_VARS = 500  # parameters per IN (...) list, well under SQLite's limit

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE records (
    rid INTEGER PRIMARY KEY,
    entity_type TEXT NOT NULL,
    source_id TEXT NOT NULL,
    handling TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (entity_type, source_id)
);
CREATE TABLE idents (
    entity_type TEXT NOT NULL,
    scheme TEXT NOT NULL,
    value TEXT NOT NULL,
    country TEXT NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (entity_type, scheme, value, country, rid)
) WITHOUT ROWID;
CREATE INDEX idents_by_rid ON idents (rid);
CREATE TABLE names (
    rid INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    folded TEXT NOT NULL,
    ascii TEXT NOT NULL,
    surname TEXT NOT NULL,
    dob TEXT NOT NULL,
    year INTEGER NOT NULL,
    md INTEGER NOT NULL,
    keys TEXT NOT NULL,
    PRIMARY KEY (rid, ord)
) WITHOUT ROWID;
CREATE TABLE name_keys (
    key TEXT NOT NULL,
    year INTEGER NOT NULL,
    md INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    PRIMARY KEY (key, year, md, rid, ord)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as stored: its metadata columns and its validated JSON body."""

    entity_type: str
    source_id: str
    handling: str
    updated_at: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NameRow:
    """One indexed name of one person: what the matcher scores without reading the body."""

    rid: int
    folded: str
    ascii: str
    surname: str
    dob: str


class RecordStorage(Protocol):
    """What the matcher and the provider need from a record store, whatever its backend."""

    def get(self, entity_type: str, source_id: str) -> StoredRecord | None: ...

    def count(self, entity_type: str | None = None) -> int: ...

    def find_exact(
        self, entity_type: str, schemes: Sequence[str], value: str, country: str | None = None
    ) -> list[int]: ...

    def candidates_by_name(
        self,
        keys: Iterable[str],
        years: Sequence[int] | None,
        limit: int,
        month_days: Sequence[int] | None = None,
    ) -> list[NameRow]: ...

    def load(self, rids: Iterable[int]) -> dict[int, StoredRecord]: ...


def _sql(template: str, n: int) -> str:
    """``template`` with ``(?*)`` expanded to ``n`` placeholders: values are always bound."""
    return template.replace("(?*)", "(" + ",".join("?" * n) + ")")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecordStore:
    """The SQLCipher record store. One connection per thread; writes go through
    :meth:`transaction` (or :meth:`put_many`), each one SQLite transaction."""

    def __init__(self, path: Path, key: bytes, *, schemas: SchemaRegistry | None = None) -> None:
        """Use :meth:`create` or :meth:`open`; this assumes the file is already laid out."""
        self.path = Path(path)
        self._key = key
        self._schemas = schemas or registry()
        # Full schema ids resolved once: validation is on the import hot path.
        self._schema_ids = {
            name: self._schemas.resolve_id(f"entities/{name}")
            for name in self._schemas.entity_types()
        }
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[Connection] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path, key: bytes, *, schemas: SchemaRegistry | None = None
    ) -> RecordStore:
        """Create a new, empty store at ``path`` (which must not exist)."""
        if Path(path).exists():
            raise StoreError(f"{path} already exists: refusing to create a store over it")
        conn = open_encrypted(Path(path), key, create=True)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT INTO meta VALUES ('layout', ?)", (LAYOUT_VERSION,))
        finally:
            conn.close()
        return cls.open(path, key, schemas=schemas, verify_integrity=False)

    @classmethod
    def open(
        cls,
        path: Path,
        key: bytes,
        *,
        schemas: SchemaRegistry | None = None,
        verify_integrity: bool = True,
    ) -> RecordStore:
        """Open an existing store; a wrong key or a damaged file fails closed (StoreError)."""
        store = cls(path, key, schemas=schemas)
        conn = store._connect(verify_integrity=verify_integrity)
        row = conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        if row is None or row[0] != LAYOUT_VERSION:
            store.close()
            raise StoreError(f"{path} is not an IBEX record store of layout {LAYOUT_VERSION}")
        return store

    @classmethod
    def open_or_create(cls, path: Path, key: bytes) -> RecordStore:
        return cls.open(path, key) if Path(path).exists() else cls.create(path, key)

    def _connect(self, *, verify_integrity: bool = False) -> Connection:
        try:
            conn = open_encrypted(self.path, self._key, verify_integrity=verify_integrity)
        except StoreError:
            raise
        except Exception as exc:  # the kernel opener maps SQLCipher errors; be safe anyway
            raise StoreError(
                f"cannot open record store {self.path}: {type(exc).__name__}"
            ) from None
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):  # closing must not fail on a busy checkpoint
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------------

    def check(self, entity_type: str, record: object) -> list[FieldError]:
        """Every reason ``record`` cannot be stored (schema errors, then store rules)."""
        schema_id = self._schema_id(entity_type)
        if not self._schemas.fast_accepts(record, schema_id):  # else validate() asks it again
            try:
                self._schemas.validate(record, schema_id)
            except SchemaValidationError as exc:
                return list(exc.errors)
        assert isinstance(record, dict)
        meta = record.get("record")
        if not isinstance(meta, dict):
            return [FieldError("/record", "required property 'record' is missing")]
        if "source_id" in meta and "handling" in meta:
            return []
        return [
            FieldError(f"/record/{name}", f"required property {name!r} is missing")
            for name in ("source_id", "handling")
            if name not in meta
        ]

    def prepare(
        self, entity_type: str, record: object, updated_at: str
    ) -> Prepared | list[FieldError]:
        """``record`` ready to write (its JSON body and index rows; ``updated_at`` when it has
        none of its own), or every reason it cannot be stored. Touches no database, so import
        workers in other processes can run it (see :mod:`connectors._parallel`)."""
        errors = self.check(entity_type, record)
        if errors:
            return errors
        assert isinstance(record, dict)
        return prepare_index(entity_type, record, updated_at)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: everything added lands on exit, or nothing does if any record
        was refused, :meth:`Transaction.abort` was called, or an exception escaped."""
        conn = self._conn()
        # A bigger page cache for the length of a write: index inserts land all over the B-trees,
        # and each cache miss is a page decrypted (and later re-encrypted) by SQLCipher.
        conn.execute(f"PRAGMA cache_size = {-WRITE_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        tx = Transaction(self, conn)
        try:
            yield tx
            if tx.failed:
                raise _Rollback
            tx.flush()
            conn.execute("COMMIT")
            tx.committed = True
        except _Rollback:
            conn.execute("ROLLBACK")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute(f"PRAGMA cache_size = {-READ_CACHE_KIB}")

    def put_many(self, entity_type: str, records: Iterable[dict[str, Any]]) -> int:
        """Validate and upsert ``records`` in one transaction; all or none. Raises
        :class:`SchemaValidationError` with pointers prefixed by each record's index."""
        errors: list[FieldError] = []
        count = 0
        with self.transaction() as tx:
            for index, record in enumerate(records):
                found = tx.add(entity_type, record, row=index)
                errors.extend(FieldError(f"/{index}{e.pointer}", e.message) for e in found)
                count += 1
        if errors:
            raise SchemaValidationError(
                f"{len(errors)} error(s) in {count} record(s); nothing was stored", errors=errors
            )
        return count

    def _schema_id(self, entity_type: str) -> str:
        sid = self._schema_ids.get(entity_type)
        if sid is None:
            raise UnknownSchema(f"no entity type {entity_type[:64]!r}")
        return sid

    # -- reading -----------------------------------------------------------------------------------

    def get(self, entity_type: str, source_id: str) -> StoredRecord | None:
        row = (
            self._conn()
            .execute(
                "SELECT entity_type, source_id, handling, updated_at, body FROM records"
                " WHERE entity_type = ? AND source_id = ?",
                (entity_type, source_id),
            )
            .fetchone()
        )
        return _stored(row) if row else None

    def count(self, entity_type: str | None = None) -> int:
        if entity_type is None:
            return int(self._conn().execute("SELECT count(*) FROM records").fetchone()[0])
        sql = "SELECT count(*) FROM records WHERE entity_type = ?"
        return int(self._conn().execute(sql, (entity_type,)).fetchone()[0])

    def find_exact(
        self, entity_type: str, schemes: Sequence[str], value: str, country: str | None = None
    ) -> list[int]:
        """Record ids whose identifier of one of ``schemes`` equals the *normalised* ``value``
        (and, when given, whose country equals ``country``)."""
        out: list[int] = []
        conn = self._conn()
        for scheme in schemes:
            if country is None:
                rows = conn.execute(
                    "SELECT rid FROM idents WHERE entity_type = ? AND scheme = ? AND value = ?",
                    (entity_type, scheme, value),
                )
            else:
                rows = conn.execute(
                    "SELECT rid FROM idents WHERE entity_type = ? AND scheme = ? AND value = ?"
                    " AND country = ?",
                    (entity_type, scheme, value, country),
                )
            out.extend(r[0] for r in rows)
        return sorted(set(out))

    def candidates_by_name(
        self,
        keys: Iterable[str],
        years: Sequence[int] | None,
        limit: int,
        month_days: Sequence[int] | None = None,
    ) -> list[NameRow]:
        """Indexed person names sharing a blocking key with the query, born in one of
        ``years`` or of unknown year (every year when ``years`` is None) and, when given, on one
        of ``month_days`` (``month * 100 + day``; 0 for an unknown day and month, ``month * 100``
        for an unknown day); at most ``limit``."""
        keys = sorted(set(keys))
        if not keys:
            return []
        sql = _sql(
            "SELECT DISTINCT n.rid, n.folded, n.ascii, n.surname, n.dob FROM name_keys k"
            " JOIN names n ON n.rid = k.rid AND n.ord = k.ord WHERE k.key IN (?*)",
            len(keys),
        )
        params: list[Any] = list(keys)
        if years is not None:
            wanted = sorted({0, *years})
            sql += _sql(" AND k.year IN (?*)", len(wanted))
            params.extend(wanted)
        if month_days is not None:
            days = sorted({0, *month_days})
            sql += _sql(" AND k.md IN (?*)", len(days))
            params.extend(days)
        sql += " LIMIT ?"
        params.append(limit)
        return [NameRow(*r) for r in self._conn().execute(sql, params)]

    def load(self, rids: Iterable[int]) -> dict[int, StoredRecord]:
        """The records with these ids (ids that no longer exist are left out)."""
        wanted = sorted(set(rids))
        out: dict[int, StoredRecord] = {}
        conn = self._conn()
        for i in range(0, len(wanted), _SQL_VARS):
            chunk = wanted[i : i + _SQL_VARS]
            rows = conn.execute(
                _sql(
                    "SELECT rid, entity_type, source_id, handling, updated_at, body FROM records"
                    " WHERE rid IN (?*)",
                    len(chunk),
                ),
                chunk,
            )
            for rid, *rest in rows:
                out[rid] = _stored(rest)
        return out


class _Rollback(Exception):
    """Internal: unwind a transaction that must not commit."""


def _stored(row: Sequence[Any]) -> StoredRecord:
    entity_type, source_id, handling, updated_at, body = row
    return StoredRecord(entity_type, source_id, handling, updated_at, json.loads(body))


class Transaction:
    """Records added inside :meth:`RecordStore.transaction`, written in batches."""

    def __init__(self, store: RecordStore, conn: Connection) -> None:
        self._store = store
        self._conn = conn
        self._pending: list[Prepared] = []
        self._seen: dict[tuple[str, str], int] = {}
        self.failed = False
        self.committed = False
        self.inserted = 0
        # Records without their own last-update time get the import's time (one clock read).
        self.started = _now()
        self.updated = 0
        row = conn.execute("SELECT coalesce(max(rid), 0) FROM records").fetchone()
        self._next_rid = int(row[0]) + 1

    def abort(self) -> None:
        """Make the transaction roll back on exit (the caller found a problem of its own)."""
        self.failed = True

    def add(self, entity_type: str, record: object, *, row: int | None = None) -> list[FieldError]:
        """Validate ``record`` and queue it; return its errors (then nothing will be written)."""
        if self.failed:  # keep validating for the report, but nothing will be written
            errors = self._store.check(entity_type, record)
            if errors:
                return errors
            assert isinstance(record, dict)
            return self._once(entity_type, record["record"]["source_id"], row)
        return self.add_prepared(self._store.prepare(entity_type, record, self.started), row=row)

    def add_prepared(
        self, prepared: Prepared | list[FieldError], *, row: int | None = None
    ) -> list[FieldError]:
        """Queue what :meth:`RecordStore.prepare` returned (with :attr:`started` as the default
        update time); return its errors, as :meth:`add` does."""
        if isinstance(prepared, list):
            self.failed = True
            return prepared
        errors = self._once(prepared[0], prepared[1], row)
        if errors or self.failed:
            return errors
        self._pending.append(prepared)
        if len(self._pending) >= FLUSH_ROWS:
            self.flush()
        return []

    def _once(self, entity_type: str, source_id: str, row: int | None) -> list[FieldError]:
        """Refuse a second record with the same source id in one transaction."""
        key = (entity_type, source_id)
        first = self._seen.get(key)
        if first is not None:
            self.failed = True
            return [FieldError("/record/source_id", f"repeats the source id of row {first}")]
        self._seen[key] = row if row is not None else len(self._seen)
        return []

    def flush(self) -> None:
        """Write the queued records (still inside the transaction)."""
        if not self._pending or self.failed:
            return
        pending, self._pending = self._pending, []
        conn = self._conn
        existing: dict[tuple[str, str], int] = {}
        by_type: dict[str, list[str]] = {}
        for p in pending:
            by_type.setdefault(p[0], []).append(p[1])
        for entity_type, ids in by_type.items():
            for i in range(0, len(ids), _SQL_VARS):
                chunk = ids[i : i + _SQL_VARS]
                rows = conn.execute(
                    _sql(
                        "SELECT source_id, rid FROM records WHERE entity_type = ?"
                        " AND source_id IN (?*)",
                        len(chunk),
                    ),
                    [entity_type, *chunk],
                )
                existing.update(((entity_type, s), r) for s, r in rows)
        if existing:
            self._forget(sorted(existing.values()))
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        idents: list[tuple[Any, ...]] = []
        names: list[tuple[Any, ...]] = []
        keys: list[tuple[Any, ...]] = []
        for entity_type, source_id, handling, updated_at, body, ident_keys, name_rows in pending:
            rid = existing.get((entity_type, source_id))
            if rid is None:
                rid = self._next_rid
                self._next_rid += 1
                inserts.append((rid, entity_type, source_id, handling, updated_at, body))
            else:
                updates.append((handling, updated_at, body, rid))
            idents.extend((entity_type, s, v, c, rid) for s, v, c in ident_keys)
            for ordinal, (folded, ascii_form, surname, dob, year, md, joined) in enumerate(
                name_rows
            ):
                names.append((rid, ordinal, folded, ascii_form, surname, dob, year, md, joined))
                keys.extend((k, year, md, rid, ordinal) for k in joined.split("\t") if k)
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", inserts)
        conn.executemany(
            "UPDATE records SET handling = ?, updated_at = ?, body = ? WHERE rid = ?", updates
        )
        conn.executemany("INSERT OR IGNORE INTO idents VALUES (?, ?, ?, ?, ?)", idents)
        conn.executemany("INSERT INTO names VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", names)
        conn.executemany("INSERT OR IGNORE INTO name_keys VALUES (?, ?, ?, ?, ?)", keys)
        self.inserted += len(inserts)
        self.updated += len(updates)

    def _forget(self, rids: list[int]) -> None:
        """Drop the index rows of records about to be replaced."""
        conn = self._conn
        for i in range(0, len(rids), _SQL_VARS):
            chunk = rids[i : i + _SQL_VARS]
            old = conn.execute(
                _sql("SELECT rid, ord, year, md, keys FROM names WHERE rid IN (?*)", len(chunk)),
                chunk,
            ).fetchall()
            conn.executemany(
                "DELETE FROM name_keys WHERE key = ? AND year = ? AND md = ? AND rid = ?"
                " AND ord = ?",
                [
                    (k, year, md, rid, ordinal)
                    for rid, ordinal, year, md, ks in old
                    for k in ks.split("\t")
                ],
            )
            conn.execute(_sql("DELETE FROM names WHERE rid IN (?*)", len(chunk)), chunk)
            conn.execute(_sql("DELETE FROM idents WHERE rid IN (?*)", len(chunk)), chunk)
