"""Imports shared out to worker processes: the same store and report as one process, all or
nothing, fail closed when a worker dies, and no plaintext on disk."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from connectors import _parallel, importer, records
from connectors.importer import ImportReport, import_file
from connectors.mapping import load_mapping
from connectors.records import RecordStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "connectors" / "examples"
ROWS = 300
NAMES = [
    ("Anna", "Ivanova"),
    ("Олена", "Коваленко"),
    ("محمد", "علي"),
    ("伟", "张"),
    ("José", "Müller"),
    ("J", "K"),
]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers from the 20th row, 7 rows a chunk: many chunks from a small file (the forked
    workers inherit these settings)."""
    monkeypatch.setattr(_parallel, "HEAD_ROWS", 20)
    monkeypatch.setattr(_parallel, "CHUNK_ROWS", 7)
    # One import time for both imports, so that default updated_at values compare equal.
    monkeypatch.setattr(records, "_now", lambda: "2026-03-01T12:00:00Z")


def person(i: int, **extra: Any) -> dict[str, Any]:
    given, surname = NAMES[i % len(NAMES)]
    out: dict[str, Any] = {
        "record": {"source_id": f"S{i:05d}", "handling": "H2"},
        "name": {"given_names": given, "surname": surname},
        "date_of_birth": f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "nationalities": ["CAN"],
        "identifiers": [{"scheme": "passport", "value": f"X-{i:07d}", "issuing_country": "CAN"}],
    }
    if i % 5 == 0:
        out["aliases"] = [{"full_name": f"{surname} {given}"}]
    return {**out, **extra}


def write_ndjson(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_cbsa_csv(path: Path, count: int) -> Path:
    """Rows in the example CBSA export's columns (read with the example mapping)."""
    with (EXAMPLES / "cbsa_persons.csv").open(encoding="utf-8", newline="") as fh:
        header, *examples = list(csv.reader(fh))
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for i in range(count):
            row = list(examples[i % len(examples)])
            row[0] = f"CBSA-{i:06d}"
            out.writerow(row)
            if i % 50 == 0:
                fh.write("\r\n")  # a blank line is not a record
    return path


def dump(store: RecordStore) -> dict[str, list[tuple[Any, ...]]]:
    conn = store._conn()
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5").fetchall()
        for table in ("records", "idents", "names", "name_keys")
    }


def both(tmp_path: Path, path: Path, **kwargs: Any) -> tuple[ImportReport, ImportReport, Any]:
    """Import ``path`` in one process and with two workers into two stores holding the same
    records beforehand; the reports, and what each store then holds."""
    out = []
    for workers in (0, 2):
        with RecordStore.create(tmp_path / f"w{workers}.db", os.urandom(32)) as store:
            store.put_many("person", [person(i, sex="X") for i in range(0, ROWS, 3)])
            report = import_file(store, path, "person", progress=False, workers=workers, **kwargs)
            out.append((report, dump(store)))
    (serial, serial_db), (parallel, parallel_db) = out
    assert parallel_db == serial_db
    assert {**parallel.to_json(), "seconds": 0} == {**serial.to_json(), "seconds": 0}
    return serial, parallel, serial_db


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_workers_store_and_report_what_one_process_does(tmp_path: Path, fmt: str) -> None:
    rows = [person(i) for i in range(ROWS)]
    path = tmp_path / f"p.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False))
    else:
        write_ndjson(path, rows)
    serial, _, db = both(tmp_path, path)
    assert serial.accepted and (serial.inserted, serial.updated) == (ROWS - ROWS // 3, ROWS // 3)
    assert len(db["records"]) == ROWS and len(db["name_keys"]) > ROWS


def test_workers_with_a_mapping_and_csv(tmp_path: Path) -> None:
    mapping = load_mapping(EXAMPLES / "cbsa_person_mapping.yaml")
    serial, _, db = both(tmp_path, write_cbsa_csv(tmp_path / "p.csv", ROWS), mapping=mapping)
    assert serial.accepted, serial.to_text()
    assert serial.rows == ROWS and len(db["records"]) == ROWS + len(range(0, ROWS, 3))


def write_quoted_csv(path: Path, count: int, literal_quote_at: int | None = None) -> Path:
    """Person rows whose given names hold quotes, commas and line breaks (\\n, \\r\\n, \\r),
    so that many records span lines and chunks; with ``literal_quote_at``, that row's surname
    is an unquoted cell holding a quote (``O"Neil``), which strict CSV allows."""
    header = "record.source_id,record.handling,name.given_names,name.surname,date_of_birth"
    lines = [header + "\r\n"]
    breaks = ["\n", "\r\n", "\r", "\n\n"]
    for i in range(count):
        given = f'"An ""{i}"",{breaks[i % 4]}na"' if i % 3 else "Anna"
        surname = 'O"Neil' if i == literal_quote_at else "Smith"
        lines.append(f"S{i:05d},H2,{given},{surname},1980-01-{1 + i % 28:02d}\r\n")
        if i % 11 == 0:
            lines.append("\r\n")  # a blank line is not a record
    path.write_bytes("".join(lines).encode())
    return path


@pytest.mark.parametrize("literal_quote_at", [None, 5, 40, ROWS - 3])
def test_csv_text_chunks_split_where_records_end(
    tmp_path: Path, literal_quote_at: int | None
) -> None:
    """The workers parse the CSV: records spanning lines come out whole and in order, and a
    quote in an unquoted cell (which miscounts where records end) hands the rest of the file
    back to the importing process, with the same rows, numbers and store."""
    path = write_quoted_csv(tmp_path / "q.csv", ROWS, literal_quote_at)
    serial, _, db = both(tmp_path, path)
    assert serial.accepted and serial.rows == ROWS, serial.to_text()
    bodies = {sid: json.loads(body) for _, _, sid, _, _, body in db["records"]}
    assert bodies["S00004"]["name"]["given_names"] == 'An "4",\nna'
    assert bodies["S00005"]["name"]["given_names"] == 'An "5",\r\nna'
    if literal_quote_at is not None:
        assert bodies[f"S{literal_quote_at:05d}"]["name"]["surname"] == 'O"Neil'


def test_csv_text_chunks_report_row_numbers_and_bad_csv(tmp_path: Path) -> None:
    path = write_quoted_csv(tmp_path / "q.csv", ROWS)
    text = path.read_bytes().replace(b"S00100,H2", b"S00100,H9")  # a bad handling code
    path.write_bytes(text + b'S99999,H2,"x"y,Smith,1980\r\n')  # then bad CSV
    serial, _, _ = both(tmp_path, path)
    assert [(e.row, e.pointer) for e in serial.errors] == [
        (101, "/record/handling"),
        (ROWS + 1, ""),
    ]
    assert "not valid CSV" in serial.errors[-1].message


def test_bad_rows_in_late_chunks_change_nothing(tmp_path: Path) -> None:
    rows = [person(i) for i in range(ROWS)]
    rows[ROWS - 40]["date_of_birth"] = "1980-02-30"
    rows[ROWS - 20]["shoe_size"] = 44
    rows[ROWS - 3] = person(7)  # a source id seen at row 8
    path = write_ndjson(tmp_path / "bad.ndjson", rows)
    with path.open("a") as fh:
        fh.write("[1]\n{bad\n")
    serial, _, db = both(tmp_path, path)
    assert not serial.accepted and (serial.inserted, serial.updated) == (0, 0)
    assert [(e.row, e.pointer) for e in serial.errors] == [
        (ROWS - 39, "/date_of_birth"),
        (ROWS - 19, "/shoe_size"),
        (ROWS - 2, "/record/source_id"),
        (ROWS + 1, ""),
        (ROWS + 2, ""),
    ]
    assert len(db["records"]) == len(range(0, ROWS, 3))  # only what was there before
    assert all('"sex":"X"' in body for *_, body in db["records"])


@pytest.mark.parametrize(
    ("tail", "message"),
    [(b'S9,H1,"unclosed\n', "not valid CSV"), (b"S9,H1,\xe9\n", "not valid UTF-8")],
)
def test_reading_errors_late_in_the_file(tmp_path: Path, tail: bytes, message: str) -> None:
    lines = ["record.source_id,record.handling,name.surname"]
    lines += [f"S{i:05d},H1,{'Smith' if i % 40 else 'x' * 300}" for i in range(2000)]
    path = tmp_path / "late.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + tail)
    serial, _, _ = both(tmp_path, path)
    assert not serial.accepted and any(message in e.message for e in serial.errors)
    assert any(e.pointer == "/name/surname" for e in serial.errors)  # rows before it: reported


def test_too_many_problems_stops_early(tmp_path: Path) -> None:
    rows = [{**person(i), "shoe_size": 1} for i in range(importer.MAX_REPORTED_ERRORS + 50)]
    serial, _, _ = both(tmp_path, write_ndjson(tmp_path / "bad.ndjson", rows))
    assert serial.truncated and len(serial.errors) == importer.MAX_REPORTED_ERRORS


def test_a_worker_that_dies_fails_the_import_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    prepare = RecordStore.prepare

    def dies_in_a_worker(self: RecordStore, entity_type: str, record: Any, started: str) -> Any:
        if os.getpid() != parent and record["record"]["source_id"] == f"S{ROWS - 10:05d}":
            os.kill(os.getpid(), signal.SIGKILL)
        return prepare(self, entity_type, record, started)

    monkeypatch.setattr(RecordStore, "prepare", dies_in_a_worker)  # inherited by the fork
    path = write_ndjson(tmp_path / "p.ndjson", [person(i) for i in range(ROWS)])
    with RecordStore.create(tmp_path / "r.db", os.urandom(32)) as store:
        store.put_many("person", [person(1, sex="X")])
        before = dump(store)
        with pytest.raises(_parallel.ImportWorkerError, match="nothing was imported"):
            import_file(store, path, "person", progress=False, workers=2)
        assert dump(store) == before
        assert multiprocessing.active_children() == []
        # The store is still usable: the same file imports once the worker behaves.
        monkeypatch.setattr(RecordStore, "prepare", prepare)
        assert import_file(store, path, "person", progress=False, workers=2).accepted


def test_an_exception_in_a_worker_is_raised_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    prepare = RecordStore.prepare

    def fails_in_a_worker(self: RecordStore, entity_type: str, record: Any, started: str) -> Any:
        if os.getpid() != parent:
            raise RuntimeError("a bug in the worker")
        return prepare(self, entity_type, record, started)

    monkeypatch.setattr(RecordStore, "prepare", fails_in_a_worker)
    path = write_ndjson(tmp_path / "p.ndjson", [person(i) for i in range(ROWS)])
    with RecordStore.create(tmp_path / "r.db", os.urandom(32)) as store:
        with pytest.raises(RuntimeError, match="a bug in the worker"):
            import_file(store, path, "person", progress=False, workers=2)
        assert store.count() == 0


def test_worker_count() -> None:
    assert _parallel.worker_count(0) == 0
    assert _parallel.worker_count(3) == 3
    assert 0 <= _parallel.worker_count(None) <= _parallel.MAX_WORKERS
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _parallel.worker_count(None) == 0  # never fork a process with other threads
    finally:
        stop.set()
        other.join()


PLANTED = "Qwxzyplanted"

_IMPORTER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from connectors import _parallel, importer
    from connectors.importer import import_file
    from connectors.records import RecordStore

    _parallel.HEAD_ROWS = 100
    _parallel.CHUNK_ROWS = 50
    db, src = Path(sys.argv[1]), Path(sys.argv[2])
    store = RecordStore.create(db, bytes.fromhex(os.environ["TEST_DB_KEY"]))
    report = import_file(store, src, "person", progress=False, workers=2)
    assert report.accepted and report.inserted == 2000, report.to_text()
    assert store.get("person", "SECRET") is not None
    store.close()
    """
)


def test_at_rest_workers_leave_no_plaintext(tmp_path: Path) -> None:
    data, tmpdir, source = tmp_path / "data", tmp_path / "tmp", tmp_path / "source"
    for folder in (data, tmpdir, source):
        folder.mkdir()
    rows = [person(i) for i in range(1999)]
    rows.insert(1500, {**person(99999), "record": {"source_id": "SECRET", "handling": "H3"}})
    rows[1500]["name"] = {"given_names": PLANTED, "surname": PLANTED}
    src = write_ndjson(source / "p.ndjson", rows)
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "SQLITE_TMPDIR": str(tmpdir),
        "TEST_DB_KEY": os.urandom(32).hex(),
        "PYTHONPATH": str(REPO),
    }
    db = data / "records.db"
    subprocess.run(
        [sys.executable, "-c", _IMPORTER, str(db), str(src)],
        env=env,
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    files = [p for p in (*data.rglob("*"), *tmpdir.rglob("*")) if p.is_file()]
    assert db in files and db.stat().st_size > 100_000
    for path in files:
        raw = path.read_bytes()
        for text in (PLANTED, PLANTED.lower()):
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                assert text.encode(encoding) not in raw, f"planted bytes found in {path.name}"
    with pytest.raises(sqlite3.DatabaseError):  # and it is not a plain SQLite file
        sqlite3.connect(db).execute("SELECT count(*) FROM sqlite_master").fetchone()
