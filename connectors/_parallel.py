"""Import workers: a large import's per-row work shared out to worker processes, in chunks.

Mapping, validating, indexing and serialising a row is pure Python, and one interpreter runs
Python on one core at a time; so past its first rows an import hands chunks of raw rows (NDJSON
lines, JSON values) to worker processes and, while they work, reads ahead and writes what comes
back, in file order, into its one transaction. The store and the report are the same as a serial
import's: the transaction sees the same rows, in the same order, prepared by the same code.

A CSV file goes out as text (a :class:`TextSource`): chunks of lines cut where the quotes
balance, which the workers parse too, so that the importing process, which writes every row,
does not parse CSV at all. A quote inside an unquoted cell can make such a cut fall inside a
record; the worker given that chunk finds it out (parsed on its own, the chunk does not end
where a record does) and the importing process parses the rest of the file itself, sending
cells as for any other format. Chunks are numbered in order as they come back, so row numbers
are the file's either way.

The workers are forked, not spawned: they need the importer's state (the schema registry and its
compiled validators, the mapping, the CSV header), which a forked child has at once and a spawned
one would take half a second to rebuild, as long as ten thousand rows take to import. A worker
never touches the parent's database connection (SQLite forbids using one across a fork; nothing
here reaches it) and writes no file: rows go out and results come back through pipes, so no
plaintext lands on disk.

It fails closed. A worker that dies (killed, out of memory) breaks the pool: the import raises
:class:`ImportWorkerError` and its transaction rolls back. An exception raised in a worker is
raised here, as a serial import would have raised it.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from connectors._indexing import Prepared
from ibex.errors import FieldError, IbexError

HEAD_ROWS = 2000  # rows prepared in the importing process while the workers start
CHUNK_ROWS = 1000  # rows per task: big enough that the per-task cost vanishes
IN_FLIGHT = 2  # chunks queued per worker: keeps each busy while memory stays flat
MAX_WORKERS = 4  # beyond this the importing process, which writes every row, is the bottleneck

Outcome = Prepared | list[FieldError]
Prepare = Callable[[Any, "str | None", str], Outcome]  # (raw row, problem, started) -> outcome
Row = tuple[int, Any, "str | None"]  # (row number, raw row, problem), see connectors.importer


class TextSource(Protocol):
    """The rest of a file as chunks of whole lines, for formats the workers parse (CSV)."""

    def lines(self, count: int) -> tuple[list[str], Exception | None]:
        """About ``count`` more lines, ending where a record probably ends ([] at the end of
        the file), and the reading error that stopped them short, if one did."""
        ...

    def parse(self, lines: list[str]) -> list[Row] | None:
        """(In a worker.) The rows of ``lines``, numbered from 1, or None when the lines are
        not whole records or do not parse (the importing process then parses them itself, and
        reports the problem, if any, as it would have)."""
        ...

    def rows(self, lines: Iterator[str], after: int) -> Iterator[Row]:
        """The rows of ``lines`` (the rest of the file), numbered on from ``after``."""
        ...


class ImportWorkerError(IbexError):
    code = "import-worker-failed"
    status = 500
    title = "Import worker failed"


def worker_count(requested: int | None) -> int:
    """How many worker processes an import may use. None where there is no ``fork`` start
    method. Otherwise ``requested`` if given (0: none); by default one per CPU up to
    :data:`MAX_WORKERS` (a worker spends more CPU time per row than the importing process, so
    on two CPUs two workers beat one: bench/bench_import.py), but none while other threads run,
    which a child would inherit frozen mid-step, holding whatever locks they held."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if requested is not None:
        return max(requested, 0)
    cpus = os.cpu_count() or 1
    if threading.active_count() > 1:
        return 0
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


def prepare_in_workers(  # noqa: PLR0915 - one generator: the pipeline and its state
    prepare: Prepare,
    rows: Iterator[Row],
    started: str,
    workers: int,
    text: TextSource | None = None,
) -> Iterator[tuple[int, Outcome]]:
    """``(row number, prepare(raw, problem, started))`` for each of ``rows``, in order.

    The first :data:`HEAD_ROWS` rows are prepared here, while ``workers`` forked processes
    start on the chunks after them (a file no longer than that never forks). With ``text``,
    the rows after those come from its chunks of lines, parsed by the workers. If reading
    raises, the rows read before are yielded first, then the exception is raised."""
    failure: Exception | None = None

    def read(count: int) -> list[Row]:
        nonlocal failure
        out: list[Row] = []
        if failure is None:
            try:
                out.extend(itertools.islice(rows, count))
            except Exception as exc:  # a reading error: raised once the rows before it are done
                failure = exc
        return out

    source = text  # where lines come from, even once this process parses them (text None)

    def read_lines(count: int) -> list[str]:
        nonlocal failure
        if failure is not None or source is None:
            return []
        lines, failure = source.lines(count)
        return lines

    def rest_of_file() -> Iterator[str]:
        """The lines not yet read, then the reading error if there is one (raised by whoever
        parses them, after the rows before it, as a serial import raises it)."""
        nonlocal failure
        while failure is None:
            lines = read_lines(CHUNK_ROWS)
            if not lines and failure is None:
                return
            yield from lines
        exc, failure = failure, None
        raise exc

    def here(found: Iterable[Row]) -> Iterator[tuple[int, Outcome]]:
        return ((number, prepare(raw, problem, started)) for number, raw, problem in found)

    head = read(HEAD_ROWS)
    first: list[Row] = []
    first_lines: list[str] = []
    if len(head) == HEAD_ROWS and failure is None:
        if text is None:
            first = read(CHUNK_ROWS)
        else:
            first_lines = read_lines(CHUNK_ROWS)
    if not (first or first_lines) or failure is not None:  # a short file: no workers
        yield from here(head + first)
        if first_lines:
            assert text is not None
            yield from here(text.rows(itertools.chain(first_lines, rest_of_file()), head[-1][0]))
        if failure is not None:
            raise failure
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(prepare, started, text),  # inherited through the fork, never pickled
    )
    # A task: the rows sent (their numbers known here) or, for a chunk of text, None and its
    # lines (kept in case this process must parse them); the rows of text are numbered as
    # they come back.
    window: deque[tuple[list[Row] | None, list[str], Future[list[Outcome] | None]]] = deque()
    more = True

    def submit() -> None:
        """Send the workers the next chunk; ``more`` turns False once the file has run out."""
        nonlocal more
        if text is not None:
            lines = read_lines(CHUNK_ROWS)
            if lines:
                window.append((None, lines, pool.submit(_prepare_lines, lines)))
            more = bool(lines) and failure is None
        else:
            chunk = read(CHUNK_ROWS)
            if chunk:
                window.append((chunk, [], pool.submit(_prepare_chunk, chunk)))
            more = len(chunk) == CHUNK_ROWS

    number = head[-1][0]
    try:
        if text is not None:
            window.append((None, first_lines, pool.submit(_prepare_lines, first_lines)))
            more = failure is None
        else:
            window.append((first, [], pool.submit(_prepare_chunk, first)))
            more = len(first) == CHUNK_ROWS
        while more and len(window) < IN_FLIGHT * workers:
            submit()
        yield from here(head)
        while window:
            chunk, _, future = window[0]
            outcomes = _outcomes(future)
            if outcomes is None:
                # Text this process must parse: from here on it reads rows, as for any format.
                assert text is not None
                unsent = [line for _, sent, _ in window for line in sent]
                window.clear()
                rows = text.rows(itertools.chain(unsent, rest_of_file()), number)
                text = None
                more = True
                while more and len(window) < IN_FLIGHT * workers:
                    submit()
                continue
            window.popleft()
            if more:
                submit()
            if chunk is None:
                yield from enumerate(outcomes, start=number + 1)
                number += len(outcomes)
            else:
                yield from zip((n for n, _, _ in chunk), outcomes, strict=True)
                number = chunk[-1][0]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure


def _outcomes(future: Future[list[Outcome] | None]) -> list[Outcome] | None:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ImportWorkerError(
            "an import worker process stopped before finishing its rows; nothing was imported"
        ) from None


# --- in the worker -------------------------------------------------------------------------------

_prepare: Prepare | None = None
_started = ""
_text: TextSource | None = None


def _start_worker(prepare: Prepare, started: str, text: TextSource | None) -> None:
    global _prepare, _started, _text  # a worker process has one job, set once
    _prepare, _started, _text = prepare, started, text


def _prepare_chunk(chunk: list[Row]) -> list[Outcome]:
    prepare = _prepare
    assert prepare is not None, "the worker was not started with a prepare function"
    return [prepare(raw, problem, _started) for _, raw, problem in chunk]


def _prepare_lines(lines: list[str]) -> list[Outcome] | None:
    """The outcomes of a chunk of text's rows, in order, or None: not whole records."""
    assert _text is not None, "the worker was not started with a text source"
    rows = _text.parse(lines)
    return None if rows is None else _prepare_chunk(rows)
