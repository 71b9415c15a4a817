"""The tamper-evident audit log: a Merkle tree of metadata-only entries with signed checkpoints.

Used for the broker's privacy audit log and each connector's disclosure log. Entries are checked
against ``messages/audit_entry`` and stored as RFC 8785 canonical JSON leaves (RFC 9162 hashing).
``append`` returns only once the entry is durable: callers hand their leaf to a per-process
committer thread and block on a future; the committer drains whatever has queued up and writes it
in one transaction with one flush (group commit), so durability does not cost a flush per entry.
A failed write is an :class:`~ibex.errors.AuditError` for every caller in the batch (they refuse
their query: fail closed); the next batch reopens the store, so the log recovers with the disk.

Checkpoints (C2SP tlog-checkpoint, signed note, Ed25519) are signed every ``checkpoint_every``
entries or ``checkpoint_seconds`` seconds, and on demand; partners add ``cosignature/v1``
cosignatures as witnesses. :meth:`AuditLog.verify` recomputes everything from the stored leaves
and names the first bad index.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from ibex.auditentry import to_leaf
from ibex.auditstore import AuditStore, SQLCipherAuditStore, StoredCheckpoint, StoredEntry
from ibex.auditverify import VerifyReport, verify_store
from ibex.errors import AuditError, BadInput, NotFound, SignatureError
from ibex.merkle import (
    Range,
    consistency_plan,
    fold,
    inclusion_plan,
    node_id,
    subtree_nodes,
)
from ibex.note import (
    SIG_COSIGNATURE_V1,
    Checkpoint,
    NoteSigner,
    Verifier,
    parse_note,
    sign_note,
    verify_note,
)

log = logging.getLogger("ibex.auditlog")

MAX_BATCH = 2048
APPEND_TIMEOUT_SECONDS = 60.0
COSIGNATURE_SKEW_SECONDS = 300
_STOP = object()


@dataclass(frozen=True, slots=True)
class AppendReceipt:
    """Where an acknowledged (durable) entry landed."""

    index: int
    leaf_hash: bytes


class AuditLog:
    """An append-only, verifiable, encrypted log of audit entries."""

    def __init__(
        self,
        path: Path,
        db_key: bytes,
        *,
        origin: str,
        signing_key: SigningKey | None = None,
        create: bool = False,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        synchronous: str = "FULL",
        verify_integrity: bool = True,
        store: AuditStore | None = None,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds <= 0:
            raise BadInput("checkpoint_every and checkpoint_seconds must be positive")
        self.origin = origin
        self._signer = NoteSigner(origin, signing_key) if signing_key is not None else None
        self._store: AuditStore = store or SQLCipherAuditStore(
            path, db_key, create=create, synchronous=synchronous, verify_integrity=verify_integrity
        )
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        latest = self._store.latest_checkpoint()
        self._last_cp = (latest.size, time.monotonic()) if latest else (0, time.monotonic())

    @property
    def vkey(self) -> str:
        """The C2SP verifier key of the log's checkpoint signer."""
        if self._signer is None:
            raise AuditError("this audit log was opened without its signing key")
        return self._signer.verifier.vkey

    # --- appending --------------------------------------------------------------------------

    def append(self, entry: Mapping[str, Any]) -> AppendReceipt:
        """Validate and append one entry; return once it is durable."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[AppendReceipt]:
        """Validate and append entries (contiguously, in order); return once durable.

        The committer thread validates and serialises the entries itself: with dozens of
        request threads, work done in each caller only makes them fight the committer for the
        GIL, while one busy committer and many idle callers keep it moving.
        """
        if not entries:
            return []
        future: Future[list[AppendReceipt]] = Future()
        self._submit((list(entries), future))
        try:
            return future.result(timeout=APPEND_TIMEOUT_SECONDS)
        except FutureTimeout:
            raise AuditError("the audit log did not acknowledge the append in time") from None

    def _submit(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                raise AuditError("the audit log is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._commit_loop, name="ibex-audit-committer", daemon=True
                )
                self._thread.start()
            self._queue.put(item)

    def _commit_loop(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=min(self._seconds, 1.0))
            except queue.Empty:
                self._maybe_checkpoint(None)
                continue
            batch, count = [], 0
            item = first
            while True:
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
                    count += len(item[0])
                if stop or count >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                size = self._commit(batch) if batch else None
                self._maybe_checkpoint(size)
            except Exception:  # the committer must outlive any bug: fail the batch, go on
                log.exception("audit committer failed")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(AuditError("the audit log could not be written"))

    def _commit(self, items: list[tuple[list[Mapping[str, Any]], Future[Any]]]) -> int | None:
        """Write one batch; resolve its futures; return the tree size it reached (if known)."""
        batch: list[tuple[list[tuple[bytes, int]], Future[Any]]] = []
        for entries, fut in items:
            try:
                batch.append(([to_leaf(e) for e in entries], fut))
            except BadInput as exc:  # this caller's entry is refused; the others go on
                fut.set_exception(exc)
            except Exception:  # not JSON data at all
                fut.set_exception(BadInput("an audit entry must be a JSON object"))
        if not batch:
            return None
        leaves = [leaf for leaves, _ in batch for leaf in leaves]
        try:
            placed = self._store.append_leaves(leaves)
        except AuditError as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            return None
        except Exception:  # never leave a caller waiting on a dead committer
            log.exception("audit committer failed")
            for _, fut in batch:
                fut.set_exception(AuditError("the audit log could not be written"))
            return None
        pos = 0
        for mine, fut in batch:
            fut.set_result([AppendReceipt(i, h) for i, h in placed[pos : pos + len(mine)]])
            pos += len(mine)
        return placed[-1][0] + 1

    def close(self) -> None:
        """Finish pending appends, stop the committer and close the store."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
        if thread is not None:
            thread.join()
        self._store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading the tree -------------------------------------------------------------------

    def size(self) -> int:
        return self._store.size()

    def _check_size(self, size: int) -> None:
        current = self.size()
        if size > current:
            raise BadInput(f"tree size {size} is larger than the log ({current} entries)")

    def _range_hashes(self, ranges: Iterable[Range]) -> list[bytes]:
        ranges = list(ranges)
        tiles = [subtree_nodes(a, b) for a, b in ranges]
        ids = {node_id(lv, i) for tile in tiles for lv, i in tile}
        found = self._store.node_hashes(ids)
        if len(found) != len(ids):
            raise AuditError("the audit store is missing tree nodes: run `ibex audit verify`")
        return [fold([found[node_id(lv, i)] for lv, i in tile]) for tile in tiles]

    def root(self, size: int | None = None) -> bytes:
        """The root hash at ``size`` (default: now), from O(log n) stored nodes."""
        size = self.size() if size is None else size
        self._check_size(size)
        return self._range_hashes([(0, size)])[0] if size else fold([])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return self._range_hashes(inclusion_plan(index, size))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        return self._range_hashes(consistency_plan(old, new))

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries ``start <= index < end`` (purged ones carry only their leaf hash)."""
        if not 0 <= start <= end:
            raise BadInput("entries need 0 <= start <= end")
        return self._store.entries(start, min(end, self.size()))

    def purge_expired(self, now: float) -> int:
        """Drop the content of entries past their retention; their leaf hashes stay."""
        return self._store.purge_expired(now)

    # --- checkpoints and witnesses ----------------------------------------------------------

    def sign_checkpoint(self) -> str:
        """Sign a checkpoint of the current tree now and return the signed note."""
        if self._signer is None:
            raise AuditError("this audit log was opened without its signing key")
        size = self.size()
        root = self.root(size)
        existing = self._store.checkpoint_at(size)
        if existing is None:
            note = sign_note(Checkpoint(self.origin, size, root).body(), [self._signer]).render()
            self._store.put_checkpoint(StoredCheckpoint(size, root, note, time.time()))
        self._last_cp = (size, time.monotonic())
        return self._with_cosignatures(self._store.checkpoint_at(size))

    def _maybe_checkpoint(self, size: int | None) -> None:
        """Sign a checkpoint when N entries or T seconds have passed since the last one.

        ``size`` is what the committer just wrote (no read needed); other processes sharing
        the file may have appended more, which the next idle tick picks up.
        """
        if self._signer is None:
            return
        try:
            last_size, last_time = self._last_cp
            if size is None:
                size = self.size()
            elif size - last_size < self._every and time.monotonic() - last_time < self._seconds:
                return
            due = size - last_size >= self._every or (
                size > last_size and time.monotonic() - last_time >= self._seconds
            )
            if due:
                self.sign_checkpoint()
        except AuditError:
            log.exception("could not sign an audit checkpoint")

    def _with_cosignatures(self, cp: StoredCheckpoint | None) -> str:
        if cp is None:
            raise NotFound("the audit log has no signed checkpoint yet")
        lines = self._store.cosignature_lines(cp.size)
        return cp.note + "".join(lines)

    def checkpoint(self) -> str:
        """The latest signed checkpoint with every cosignature it has collected."""
        latest = self._store.latest_checkpoint()
        if latest is None and self._signer is not None:
            return self.sign_checkpoint()
        return self._with_cosignatures(latest)

    def add_cosignature(
        self, note_text: str | bytes, witness_keys: Mapping[str, bytes]
    ) -> list[str]:
        """Store the cosignatures on a checkpoint this log signed; return the witnesses' names.

        Only signatures from ``witness_keys`` (name -> Ed25519 key) count; at least one must
        verify, and the cosigned text must be exactly a checkpoint this log signed.
        """
        note = parse_note(note_text)
        cp = Checkpoint.parse(note.text)
        stored = self._store.checkpoint_at(cp.size)
        if cp.origin != self.origin or stored is None or parse_note(stored.note).text != note.text:
            raise NotFound("this log never signed the checkpoint that was cosigned")
        trusted = [Verifier(n, SIG_COSIGNATURE_V1, bytes(k)) for n, k in witness_keys.items()]
        verified = verify_note(note, trusted)
        latest_ok = time.time() + COSIGNATURE_SKEW_SECONDS
        if any(v.timestamp is None or v.timestamp > latest_ok for v in verified):
            raise SignatureError("a cosignature is dated in the future")
        self._store.add_cosignatures(
            cp.size,
            [
                (v.verifier.name, v.signature.key_id, int(v.timestamp or 0), v.signature.line())
                for v in verified
            ],
        )
        return [v.verifier.name for v in verified]

    # --- verification -----------------------------------------------------------------------

    def verify(
        self,
        *,
        log_key: Verifier | None = None,
        witness_keys: Mapping[str, bytes] | None = None,
        now: float | None = None,
    ) -> VerifyReport:
        """Recompute the whole log from its leaves (:func:`ibex.auditverify.verify_store`)."""
        key = log_key or (self._signer.verifier if self._signer else None)
        witnesses = [
            Verifier(n, SIG_COSIGNATURE_V1, bytes(k)) for n, k in (witness_keys or {}).items()
        ]
        return verify_store(
            self._store, origin=self.origin, log_key=key, witnesses=witnesses,
            now=time.time() if now is None else now,
        )  # fmt: skip


__all__ = ["AppendReceipt", "AuditLog", "StoredEntry", "VerifyReport"]
