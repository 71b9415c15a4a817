"""The tamper-evident audit log: a Merkle tree of metadata-only entries with signed checkpoints.

Used for the broker's privacy audit log and each connector's disclosure log. Entries are checked
against ``messages/audit_entry`` and stored as RFC 8785 canonical JSON leaves (RFC 9162 hashing).
``append`` returns only once the entry is durable. Appends use leader/follower group commit: each
caller validates and serialises its entry on its own thread and queues the leaf; the first caller
to find no commit in progress becomes the leader, writes everything queued in one transaction with
one flush, passes the lead to the oldest waiter and wakes the rest, so durability costs neither a
flush per entry nor a hand-off to another thread. A failed write is an
:class:`~ibex.errors.AuditError` for every caller in the batch (they refuse their query: fail
closed); the next batch reopens the store, so the log recovers with the disk.

Checkpoints (C2SP tlog-checkpoint, signed note, Ed25519) are signed every ``checkpoint_every``
entries or ``checkpoint_seconds`` seconds, and on demand; partners add ``cosignature/v1``
cosignatures as witnesses. :meth:`AuditLog.verify` recomputes everything from the stored leaves
and names the first bad index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
# Where a queued append stands. It moves on under AuditLog._mutex, except to DONE: the leader
# sets DONE once the receipts or the error are in place, then wakes the caller.
_QUEUED, _LEAD, _TAKEN, _DONE = range(4)


@dataclass(frozen=True, slots=True)
class AppendReceipt:
    """Where an acknowledged (durable) entry landed."""

    index: int
    leaf_hash: bytes


class _Request:
    """One caller's leaves, queued until a leader writes them (or hands this caller the lead)."""

    __slots__ = ("error", "handover", "leaves", "receipts", "state", "wake")

    def __init__(self, leaves: list[tuple[bytes, int]]) -> None:
        self.leaves = leaves
        self.receipts: list[AppendReceipt] = []
        self.error: str | None = None
        self.state = _QUEUED
        self.handover: list[_Request] = []  # given the lead: the written callers it must wake
        self.wake = threading.Lock()  # held until the leader releases it: the cheapest wake-up
        self.wake.acquire()

    def outcome(self) -> list[AppendReceipt]:
        if self.error is not None:  # a fresh exception per caller: tracebacks are per thread
            raise AuditError(self.error)
        return self.receipts


def _leaf(entry: Mapping[str, Any]) -> tuple[bytes, int]:
    try:
        return to_leaf(entry)
    except BadInput:
        raise
    except Exception:  # not JSON data at all
        raise BadInput("an audit entry must be a JSON object") from None


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
        self._mutex = threading.Lock()  # guards the queue and the lead, never held for I/O
        self._idle = threading.Condition(self._mutex)  # notified when the last leader is done
        self._pending: deque[_Request] = deque()
        self._leading = False
        self._closed = False
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._signing = threading.Lock()  # one checkpoint signer at a time; close() waits
        self._store_closed = False
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

        The entries are validated and serialised here, on the caller's thread, so that this
        work overlaps the commit in progress (SQLCipher releases the GIL while it encrypts and
        flushes). Then the caller queues its leaves and either waits for the leader to write
        them or, if no commit is in progress, leads: it writes everything queued in one
        transaction, passes the lead to the oldest waiter and wakes the others.
        """
        if not entries:
            return []
        request = _Request([_leaf(e) for e in entries])
        with self._mutex:
            if self._closed:
                raise AuditError("the audit log is closed")
            self._pending.append(request)
            lead = not self._leading
            self._leading = True
            if self._ticker is None and self._signer is not None:
                self._ticker = threading.Thread(
                    target=self._tick, name="ibex-audit-checkpointer", daemon=True
                )
                self._ticker.start()
        if lead or self._wait(request):
            size = self._lead(request)
            if size is not None:
                self._maybe_checkpoint(size)
        return request.outcome()

    def _wait(self, request: _Request) -> bool:
        """Block until ``request`` is written (False) or its caller must lead (True)."""
        if request.wake.acquire(timeout=APPEND_TIMEOUT_SECONDS):
            return request.state == _LEAD
        with self._mutex:
            state = request.state
            if state == _QUEUED:  # no leader took it: withdraw it, nothing was written
                self._pending.remove(request)
        if state == _LEAD:  # handed the lead just as the wait ran out
            return True
        if request.state == _DONE:
            return False
        raise AuditError("the audit log did not acknowledge the append in time")

    def _lead(self, mine: _Request) -> int | None:
        """Write ``mine`` and everything queued behind it (one transaction); pass the lead on.

        Whoever leads is always at the head of the queue (the lead passes to the oldest
        waiter), so one batch is enough; the tree size it reached is returned when known.

        The callers a leader wrote are woken by the *next* leader, once its own rows are in and
        just before its ``COMMIT`` (or by this one when nobody is queued). Their entries are
        already durable; the point is the GIL: woken callers go straight back to CPU work, and
        a leader that lets go of the GIL for each short statement (``BEGIN``, the size, the
        inserts) while they run waits up to the 5 ms switch interval to get it back every
        time. Woken during ``COMMIT`` instead, they run while SQLCipher encrypts and flushes.
        """
        previous, mine.handover = mine.handover, []

        def wake_previous() -> None:
            for request in previous:
                request.wake.release()
            previous.clear()

        batch: list[_Request] = []
        size = None
        try:
            with self._mutex:
                count = 0
                while self._pending and (
                    not batch or count + len(self._pending[0].leaves) <= MAX_BATCH
                ):
                    request = self._pending.popleft()
                    request.state = _TAKEN
                    batch.append(request)
                    count += len(request.leaves)
            size = self._write(batch, wake_previous)
        finally:  # even on a bug or an interrupt, nobody is left waiting and the lead moves on
            wake_previous()  # if the write failed before its commit
            for request in batch:
                if request.state != _DONE:
                    request.error = request.error or "the audit log could not be written"
                    request.state = _DONE
            written = [request for request in batch if request is not mine]
            with self._mutex:
                head = self._pending[0] if self._pending else None
                if head is None:
                    self._leading = False
                    self._idle.notify_all()
                else:
                    head.state = _LEAD
                    head.handover = written
            if head is not None:
                head.wake.release()
            else:
                for request in written:
                    request.wake.release()
        return size

    def _write(self, batch: list[_Request], before_commit: Callable[[], None]) -> int | None:
        """Write the batch's leaves in one transaction; give each request its receipts."""
        leaves = [leaf for request in batch for leaf in request.leaves]
        try:
            placed = self._store.append_leaves(leaves, before_commit)
            if len(placed) != len(leaves):
                raise RuntimeError(f"the store placed {len(placed)} of {len(leaves)} leaves")
        except AuditError as exc:
            error = exc.detail
        except Exception:  # never let a bug pass for a write: every caller refuses
            log.exception("audit append failed")
            error = "the audit log could not be written"
        else:
            pos = 0
            for request in batch:
                end = pos + len(request.leaves)
                request.receipts = [AppendReceipt(i, h) for i, h in placed[pos:end]]
                request.state = _DONE
                pos = end
            return placed[-1][0] + 1
        for request in batch:
            request.error = error
            request.state = _DONE
        return None

    def _tick(self) -> None:
        """Sign a checkpoint when T seconds have passed with entries unsigned, even when idle."""
        while not self._stopping.wait(min(self._seconds, 1.0)):
            self._maybe_checkpoint(None)

    def close(self) -> None:
        """Finish the appends in progress, stop the checkpoint timer and close the store."""
        with self._mutex:
            self._closed = True
            while self._leading:
                self._idle.wait()
            ticker = self._ticker
        self._stopping.set()
        if ticker is not None:
            ticker.join()
        with self._signing:  # the last leader may still be signing the checkpoint it made due
            self._store_closed = True
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

        ``size`` is what a leader just wrote (no read needed); other processes sharing the file
        may have appended more, which the timer's next tick picks up. One signer at a time: a
        leader that finds another signing goes back to its caller.
        """
        if self._signer is None:
            return
        last_size, last_time = self._last_cp
        if (
            size is not None
            and size - last_size < self._every
            and time.monotonic() - last_time < self._seconds
        ):
            return
        if not self._signing.acquire(blocking=False):
            return
        try:
            if self._store_closed:  # close() took the lock first
                return
            last_size, last_time = self._last_cp
            if size is None:
                size = self.size()
            due = size - last_size >= self._every or (
                size > last_size and time.monotonic() - last_time >= self._seconds
            )
            if due:
                self.sign_checkpoint()
        except Exception:  # an append is durable without its checkpoint; the next one is due
            log.exception("could not sign an audit checkpoint")
        finally:
            self._signing.release()

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
