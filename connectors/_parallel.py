"""Import workers: a large import's per-row work shared out to worker processes, in chunks.

Mapping, validating, indexing and serialising a row is pure Python, and one interpreter runs
Python on one core at a time; so past its first rows an import hands chunks of raw rows (CSV
cells, NDJSON lines) to worker processes and, while they work, reads ahead and writes what comes
back, in file order, into its one transaction. The store and the report are the same as a serial
import's: the transaction sees the same rows, in the same order, prepared by the same code.

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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from connectors._indexing import Prepared
from ibex.errors import FieldError, IbexError

HEAD_ROWS = 2000  # rows prepared in the importing process while the workers start
CHUNK_ROWS = 1000  # rows per task: big enough that the per-task cost vanishes
IN_FLIGHT = 2  # chunks queued per worker: keeps each busy while memory stays flat
MAX_WORKERS = 4  # beyond this the importing process, which writes every row, is the bottleneck

Outcome = Prepared | list[FieldError]
Prepare = Callable[[Any, "str | None", str], Outcome]  # (raw row, problem, started) -> outcome
Row = tuple[int, Any, "str | None"]  # (row number, raw row, problem), see connectors.importer


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


def prepare_in_workers(
    prepare: Prepare, rows: Iterator[Row], started: str, workers: int
) -> Iterator[tuple[int, Outcome]]:
    """``(row number, prepare(raw, problem, started))`` for each of ``rows``, in order.

    The first :data:`HEAD_ROWS` rows are prepared here, while ``workers`` forked processes
    start on the chunks after them (a file no longer than that never forks). If reading
    ``rows`` raises, the rows read before are yielded first, then the exception is raised."""
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

    head = read(HEAD_ROWS)
    first = read(CHUNK_ROWS) if len(head) == HEAD_ROWS else []
    if not first or failure is not None:
        here = head + first
        yield from ((number, prepare(raw, problem, started)) for number, raw, problem in here)
        if failure is not None:
            raise failure
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(prepare, started),  # inherited through the fork, never pickled
    )
    window: deque[tuple[list[Row], Future[list[Outcome]]]] = deque()

    def submit(chunk: list[Row]) -> bool:
        """Send the workers a chunk; False once the rows have run out."""
        if chunk:
            window.append((chunk, pool.submit(_prepare_chunk, chunk)))
        return len(chunk) == CHUNK_ROWS

    try:
        more = submit(first)
        while more and len(window) < IN_FLIGHT * workers:
            more = submit(read(CHUNK_ROWS))
        yield from ((number, prepare(raw, problem, started)) for number, raw, problem in head)
        while window:
            chunk, future = window.popleft()
            outcomes = _outcomes(future)
            if more:
                more = submit(read(CHUNK_ROWS))
            yield from zip((number for number, _, _ in chunk), outcomes, strict=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure


def _outcomes(future: Future[list[Outcome]]) -> list[Outcome]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ImportWorkerError(
            "an import worker process stopped before finishing its rows; nothing was imported"
        ) from None


# --- in the worker -------------------------------------------------------------------------------

_prepare: Prepare | None = None
_started = ""


def _start_worker(prepare: Prepare, started: str) -> None:
    global _prepare, _started  # a worker process has one job, set once
    _prepare, _started = prepare, started


def _prepare_chunk(chunk: list[Row]) -> list[Outcome]:
    prepare = _prepare
    assert prepare is not None, "the worker was not started with a prepare function"
    return [prepare(raw, problem, _started) for _, raw, problem in chunk]
