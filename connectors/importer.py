"""Importing an agency's records from CSV, JSON (an array) or NDJSON into the record store.

Every row is read, mapped (:mod:`connectors.mapping`) and validated against the shared schema
and the store's rules; the rows are written inside one store transaction as they stream past, so
memory stays flat, and the transaction commits only if *every* row was good. One bad row and
nothing changes: the report lists each problem with its row number (the Nth record in the file,
from 1), the JSON pointer of the field in the mapped record, and a message that never contains
the value. Importing a record whose source id is already stored updates it.

A large file is shared out: past its first rows, worker processes map, validate and index chunks
of rows while this process reads and writes (:mod:`connectors._parallel`). The store and the
report are the same as a serial import's, row for row.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from connectors._indexing import Prepared
from connectors._parallel import prepare_in_workers, worker_count
from connectors.mapping import IDENTITY, Mapping, csv_header_problem, csv_shaper
from connectors.records import RecordStore, Transaction
from ibex.errors import BadInput, FieldError
from ibex.jsonio import MAX_DEPTH, loads_strict

FORMATS = ("csv", "json", "ndjson")
_SUFFIXES = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
JSON_MAX_BYTES = 256 << 20  # a JSON array is parsed whole; larger exports should be NDJSON
LINE_MAX_BYTES = 1 << 20  # one NDJSON line or one CSV field
MAX_REPORTED_ERRORS = 1000
PROGRESS_MIN_ROWS = 5000


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem: which record (row 0 means the file as a whole), which field, what."""

    row: int
    pointer: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "pointer": self.pointer, "detail": self.message}


@dataclass(slots=True)
class ImportReport:
    """What an import did: rows read, inserted, updated, and every problem found."""

    path: str
    entity_type: str
    format: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    truncated: bool = False
    seconds: float = 0.0

    @property
    def accepted(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "entity_type": self.entity_type,
            "format": self.format,
            "accepted": self.accepted,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "errors": [e.to_json() for e in self.errors],
            "errors_truncated": self.truncated,
            "seconds": round(self.seconds, 3),
        }

    def to_text(self) -> str:
        if self.accepted:
            rate = self.rows / self.seconds if self.seconds > 0 else 0.0
            return (
                f"imported {self.rows} {self.entity_type} record(s) from {self.path}: "
                f"{self.inserted} new, {self.updated} updated ({rate:,.0f} records/s)"
            )
        lines = [
            f"rejected {self.path}: {len(self.errors)} problem(s) in {self.rows} row(s);"
            " nothing was imported"
        ]
        lines.extend(
            f"  row {e.row}: {e.pointer or '/'}: {e.message}" if e.row else f"  file: {e.message}"
            for e in self.errors
        )
        if self.truncated:
            lines.append(f"  (stopped after {MAX_REPORTED_ERRORS} problems)")
        return "\n".join(lines)


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise BadInput(f"format must be one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise BadInput(f"cannot tell the format of {path.name}; use --format csv|json|ndjson")
    return found


# --- readers ------------------------------------------------------------------------------------
#
# A reader yields (row number, raw row, problem): the raw row is what the file gives cheaply (CSV
# cells, an NDJSON line, a JSON value), or None and the problem that refuses the row. Turning a
# raw row into a record ready to write (:class:`_Stage`) is the costly part, and is what import
# workers share out; reading stays here, where CSV records and NDJSON lines are told apart.


Row = tuple[int, Any, "str | None"]
Decode = Callable[[Any], "dict[str, Any] | str"]  # a raw row to an object, or a problem


def _read_csv(fh: TextIO) -> tuple[Decode, Iterator[Row], _CsvText | None]:
    """The CSV file's decoder and rows, and (past the header) its text for import workers."""
    csv.field_size_limit(LINE_MAX_BYTES)
    reader = csv.reader(fh, strict=True)
    header = next(reader, None)
    if header is None:
        return _as_object, iter(()), None
    if len(set(header)) != len(header) or any(not h.strip() for h in header):
        refused = "the header has empty or repeated column names"
        return _as_object, iter([(0, None, refused)]), None
    clash = csv_header_problem(header)
    if clash is not None:
        return _as_object, iter([(0, None, clash)]), None
    # The reader reads no further than the record it returns: whoever reads next, the rows
    # or the text, goes on from the line after the header.
    return csv_shaper(header), _csv_rows(reader, len(header)), _CsvText(fh, len(header))


def _csv_rows(reader: Iterator[list[str]], width: int, after: int = 0) -> Iterator[Row]:
    number = after
    for cells in reader:
        if not cells:
            continue  # a blank line is not a record
        number += 1
        if len(cells) != width:
            yield number, None, f"has {len(cells)} cells; the header has {width}"
        else:
            yield number, cells, None


@dataclass(frozen=True, slots=True)
class _CsvText:
    """A CSV file's records as text, for import workers to parse (a
    :class:`connectors._parallel.TextSource`): chunks of lines cut where the quotes seen so far
    balance. A literal quote in an unquoted cell (``5" floppy``) throws the count off; the
    worker parsing the chunk then finds it does not end where a record ends, and this process
    parses the rest itself."""

    fh: TextIO
    width: int
    longest: int = 8  # a chunk waiting for its quotes to balance stops at this many times count

    def lines(self, count: int) -> tuple[list[str], Exception | None]:
        out: list[str] = []
        append = out.append
        try:
            for line in itertools.islice(self.fh, count):
                append(line)
            if "".join(out).count('"') % 2:  # inside a quoted cell, very likely
                for line in itertools.islice(self.fh, count * self.longest):
                    append(line)
                    if line.count('"') % 2:
                        break
        except Exception as exc:  # raised by whoever parses the lines read before it
            return out, exc
        return out, None

    def parse(self, lines: list[str]) -> list[Row] | None:
        try:
            return list(_csv_rows(csv.reader(lines, strict=True), self.width))
        except csv.Error:  # ends inside a quoted cell, or is not CSV: told here, in file order
            return None

    def rows(self, lines: Iterator[str], after: int) -> Iterator[Row]:
        return _csv_rows(csv.reader(lines, strict=True), self.width, after)


def _read_ndjson(fh: TextIO) -> Iterator[Row]:
    number = 0
    for line in fh:
        if not line.strip():
            continue
        number += 1
        yield number, line, None


def _read_json(path: Path) -> Iterator[Row]:
    if path.stat().st_size > JSON_MAX_BYTES:
        yield 0, None, f"a JSON file larger than {JSON_MAX_BYTES >> 20} MiB must be given as NDJSON"
        return
    try:
        doc = loads_strict(path.read_bytes(), max_bytes=JSON_MAX_BYTES, what="the file")
    except BadInput as exc:
        yield 0, None, exc.detail
        return
    if not isinstance(doc, list):
        yield 0, None, "a JSON import file must hold an array of records"
        return
    for number, value in enumerate(doc, start=1):
        yield number, value, None


def _as_object(value: Any) -> dict[str, Any] | str:
    return value if isinstance(value, dict) else "is not a JSON object"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")  # loads_strict, asked again, words the problem
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(name)


_DECODE_LINE = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant).decode
_FAST_LINE_CHARS = LINE_MAX_BYTES // 4  # a character is at most four bytes of UTF-8


def _parse_line(line: str) -> dict[str, Any] | str:
    """One NDJSON line as an object, exactly as :func:`~ibex.jsonio.loads_strict` parses it,
    in three quarters of the time: a line too short to break the size limit, with no more
    brackets than the depth limit, cannot break either, so it goes straight to the parser with
    loads_strict's refusals (NaN, Infinity, and duplicate keys, found here by one size
    comparison in C rather than pair by pair in Python). Any other line, and every line refused
    here, goes to loads_strict, which decides and words the problem; a test holds the two to
    the same answers."""
    if len(line) <= _FAST_LINE_CHARS and line.count("{") + line.count("[") <= MAX_DEPTH:
        try:
            return _as_object(_DECODE_LINE(line))
        except ValueError:  # JSONDecodeError included
            pass
    try:
        value = loads_strict(line, max_bytes=LINE_MAX_BYTES, what="the line")
    except BadInput as exc:
        return exc.detail
    return _as_object(value)


@dataclass(frozen=True, slots=True)
class _Stage:
    """The per-row work: a raw row to a record (decode, map), then to a record ready to write
    (validate, index, serialise). The same code runs here and in import workers."""

    store: RecordStore
    entity_type: str
    decode: Decode
    mapping: Mapping

    def record(self, raw: Any, problem: str | None) -> dict[str, Any] | list[FieldError]:
        """The mapped record of a raw row, or the reasons there is none."""
        if problem is not None:
            return [FieldError("", problem)]
        row = self.decode(raw)
        if isinstance(row, str):
            return [FieldError("", row)]
        if self.mapping is IDENTITY:
            return row
        record, problems = self.mapping.apply(row)
        return problems or record

    def prepare(self, raw: Any, problem: str | None, started: str) -> Prepared | list[FieldError]:
        """What :meth:`Transaction.add_prepared` takes for a raw row (``started``: the
        transaction's time, the default ``updated_at``)."""
        record = self.record(raw, problem)
        if isinstance(record, list):
            return record
        return self.store.prepare(self.entity_type, record, started)


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
    return count


class _Progress:
    """A plain-text progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.last = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r[{bar:<30}] {frac:4.0%} {done:,} rows")
        if final:
            self.stream.write("\n")
        self.stream.flush()


# --- the import ----------------------------------------------------------------------------------


def import_file(
    store: RecordStore,
    path: Path,
    entity_type: str,
    *,
    fmt: str | None = None,
    mapping: Mapping | None = None,
    progress: bool | None = None,
    progress_stream: TextIO | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Import ``path`` into ``store`` as ``entity_type`` records: all rows or none.

    ``progress`` None shows a bar when stderr is a terminal and the file has more than
    :data:`PROGRESS_MIN_ROWS` rows; True or False forces it on or off. ``workers`` is the
    number of worker processes for a large file (None: one per CPU, up to four, when this
    process can fork safely; 0: none; see :func:`connectors._parallel.worker_count`).
    """
    path = Path(path)
    fmt = detect_format(path, fmt)
    mapping = mapping or IDENTITY
    if mapping.entity_type is not None and mapping.entity_type != entity_type:
        raise BadInput(f"the mapping is for {mapping.entity_type} records, not {entity_type}")
    report = ImportReport(str(path), entity_type, fmt)
    started = time.perf_counter()
    stream = progress_stream or sys.stderr
    bar: _Progress | None = None
    if progress or progress is None:
        estimate = _count_lines(path) if fmt != "json" else 0
        if progress or (estimate > PROGRESS_MIN_ROWS and stream.isatty()):
            bar = _Progress(estimate, stream)
    try:
        with store.transaction() as tx:
            for number, problems in _added(store, path, fmt, entity_type, mapping, tx, workers):
                report.rows = max(report.rows, number)
                for p in problems:
                    _problem(report, tx, RowError(number, p.pointer, p.message))
                if report.truncated:
                    break
                if bar is not None:
                    bar.update(number)
            if report.rows == 0 and not report.errors:
                _problem(report, tx, RowError(0, "", "the file holds no records"))
        report.inserted, report.updated = (tx.inserted, tx.updated) if tx.committed else (0, 0)
    except UnicodeDecodeError:
        report.errors.append(RowError(0, "", "the file is not valid UTF-8"))
    except csv.Error as exc:
        report.errors.append(RowError(report.rows + 1, "", f"is not valid CSV ({exc})"))
    finally:
        if bar is not None:
            bar.update(report.rows, final=True)
    report.seconds = time.perf_counter() - started
    return report


def _added(
    store: RecordStore,
    path: Path,
    fmt: str,
    entity_type: str,
    mapping: Mapping,
    tx: Transaction,
    workers: int | None,
) -> Iterator[tuple[int, list[FieldError]]]:
    """Add each row of the file to ``tx``, in file order; yield its number and problems."""
    if fmt == "json":
        yield from _add_rows(
            _Stage(store, entity_type, _as_object, mapping), _read_json(path), tx, workers
        )
        return
    with path.open(encoding="utf-8-sig", newline="" if fmt == "csv" else None) as fh:
        text: _CsvText | None = None
        if fmt == "csv":
            decode, rows, text = _read_csv(fh)
        else:
            decode, rows = _parse_line, _read_ndjson(fh)
        stage = _Stage(store, entity_type, decode, mapping)
        yield from _add_rows(stage, rows, tx, workers, text)


def _add_rows(
    stage: _Stage,
    rows: Iterator[Row],
    tx: Transaction,
    workers: int | None,
    text: _CsvText | None = None,
) -> Iterator[tuple[int, list[FieldError]]]:
    """Rows are worked on by worker processes where there may be some (see
    :mod:`connectors._parallel`; ``text``: the rest of a CSV file, which they parse), else
    here from ``rows``. Either way the transaction gets the same rows in the same order, and a
    reading error is raised after the rows read before it."""
    count = worker_count(workers)
    if count:
        prepared_rows = prepare_in_workers(stage.prepare, rows, tx.started, count, text)
        for number, prepared in prepared_rows:
            yield number, tx.add_prepared(prepared, row=number)
        return
    for number, raw, problem in rows:
        record = stage.record(raw, problem)
        if isinstance(record, list):
            yield number, tx.add_prepared(record, row=number)
        else:
            yield number, tx.add(stage.entity_type, record, row=number)


def _problem(report: ImportReport, tx: Any, error: RowError) -> None:
    tx.abort()
    if len(report.errors) >= MAX_REPORTED_ERRORS:
        report.truncated = True
        return
    report.errors.append(error)
