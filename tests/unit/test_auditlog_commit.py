"""Group commit of the audit log: batching, leader failure, time-outs, close, shared files.

A gate around the real SQLCipher store holds a leader just after its transaction committed, so
that followers queue up behind it deterministically; nothing here depends on timing luck.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from ibex import auditlog
from ibex.auditentry import to_leaf
from ibex.auditlog import AppendReceipt, AuditLog
from ibex.auditstore import SQLCipherAuditStore, StoredCheckpoint
from ibex.errors import AuditError
from ibex.merkle import leaf_hash, root_from_leaf_hashes
from ibex.note import NoteSigner, open_checkpoint
from ibex.store import generate_db_key_file, load_db_key
from tests.unit.test_auditlog import ORIGIN, open_log, sample_entry

WAIT = 30.0  # generous bound on anything a test waits for; never reached when all is well


class Gate:
    """Holds one write after its commit: ``held`` is set then, and it waits for ``release``."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()


class GatedStore(SQLCipherAuditStore):
    """The real store; writes can be held after they commit, or made to fail like a bug."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gates: list[Gate] = []  # the next writes, in order, are held by these
        self.broken = False  # the next write raises a plain bug instead of writing
        self.batches: list[int] = []
        self.checkpoint_gate: Gate | None = None  # holds the next checkpoint before it is stored

    def gate(self) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        return gate

    def append_leaves(
        self,
        leaves: Sequence[tuple[bytes, int]],
        before_commit: Callable[[], None] | None = None,
    ) -> list[tuple[int, bytes]]:
        self.batches.append(len(leaves))
        if self.broken:
            self.broken = False
            raise RuntimeError("a bug in the store")
        placed = super().append_leaves(leaves, before_commit)
        if self.gates:
            gate = self.gates.pop(0)
            gate.held.set()
            assert gate.release.wait(WAIT)
        return placed

    def put_checkpoint(self, cp: StoredCheckpoint) -> None:
        gate, self.checkpoint_gate = self.checkpoint_gate, None
        if gate is not None:
            gate.held.set()
            assert gate.release.wait(WAIT)
        super().put_checkpoint(cp)


def gated_log(tmp_path: Path, **kw: Any) -> tuple[AuditLog, GatedStore]:
    key = load_db_key(generate_db_key_file(tmp_path / "audit.key"))
    store = GatedStore(tmp_path / "audit.db", key, create=True)
    log = AuditLog(tmp_path / "audit.db", key, origin=ORIGIN, store=store, **kw)
    return log, store


class Caller(threading.Thread):
    """One append (or append_many) on its own thread, keeping its receipts or its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "an append never returned"
        return self.result


def wait_until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def hold_leader(log: AuditLog, store: GatedStore, index: int) -> tuple[Caller, Gate]:
    """Start an append that commits and then keeps the lead until its gate is released."""
    gate = store.gate()
    leader = Caller(lambda: log.append(sample_entry(index)))
    assert gate.held.wait(WAIT)
    return leader, gate


def queue_followers(log: AuditLog, calls: list[Callable[[], Any]]) -> list[Caller]:
    followers = []
    for fn in calls:  # one at a time, so the queue order is known
        followers.append(Caller(fn))
        wait_until(lambda: len(log._pending) == len(followers))
    return followers


def test_appends_queued_behind_a_commit_go_in_one_transaction_in_order(tmp_path: Path) -> None:
    log, store = gated_log(tmp_path)
    with log:
        leader, gate = hold_leader(log, store, 0)
        followers = queue_followers(
            log,
            [
                lambda: log.append(sample_entry(1)),
                lambda: log.append_many([sample_entry(2), sample_entry(3), sample_entry(4)]),
                lambda: log.append(sample_entry(5)),
            ],
        )
        gate.release.set()
        assert leader.outcome().index == 0
        assert followers[0].outcome().index == 1
        assert [r.index for r in followers[1].outcome()] == [2, 3, 4]
        assert followers[2].outcome().index == 5
        assert store.batches == [1, 5]  # the followers shared one transaction
        assert log.verify().ok


def test_many_writers_every_acknowledged_entry_is_stored_and_the_tree_verifies(
    tmp_path: Path,
) -> None:
    acked: list[tuple[list[AppendReceipt], list[dict[str, Any]]]] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        for i in range(12):
            entries = [sample_entry(w * 1000 + i * 10 + k) for k in range(1 + (w + i) % 3)]
            receipts = [log.append(entries[0])] if len(entries) == 1 else log.append_many(entries)
            with lock:
                acked.append((receipts, entries))

    with open_log(tmp_path) as log:
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        size = log.size()
        stored = {e.index: e for e in log.entries(0, size)}
        seen = []
        for receipts, entries in acked:
            first = receipts[0].index
            assert [r.index for r in receipts] == list(range(first, first + len(entries)))
            for receipt, entry in zip(receipts, entries, strict=True):
                leaf = to_leaf(entry)[0]
                assert receipt.leaf_hash == leaf_hash(leaf)
                assert stored[receipt.index].leaf == leaf
                seen.append(receipt.index)
        assert sorted(seen) == list(range(size))
        assert log.root() == root_from_leaf_hashes([stored[i].leaf_hash for i in range(size)])
        assert log.verify().ok


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_failed_commit_fails_every_waiter_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    log, store = gated_log(tmp_path)
    with log:
        leader, gate = hold_leader(log, store, 0)
        big = [[sample_entry(100 * w + k) for k in range(600)] for w in range(1, 4)]
        followers = queue_followers(log, [lambda e=entries: log.append_many(e) for entries in big])
        # The disk is full for the followers' batch (see test_a_full_disk_fails_closed_...).
        writer = store._writer
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        gate.release.set()
        acknowledged = leader.outcome()
        for follower in followers:
            follower.join(WAIT)
            assert isinstance(follower.error, AuditError), follower.error
        assert store.batches == [1, 1800]
        # The failed connection was dropped; the next append reopens the store and goes on.
        assert log.append(sample_entry(9)).index == 1
        assert log.entries(0, 1)[0].leaf_hash == acknowledged.leaf_hash
        assert log.size() == 2 and log.verify().ok
        del writer
    gc.collect()  # the dropped connection's finalizer runs here, under this test's filter


def test_a_bug_in_the_commit_is_an_audit_error_for_each_waiter(tmp_path: Path) -> None:
    log, store = gated_log(tmp_path)
    with log:
        leader, gate = hold_leader(log, store, 0)
        followers = queue_followers(
            log, [lambda i=i: log.append(sample_entry(i)) for i in (1, 2, 3)]
        )
        store.broken = True
        gate.release.set()
        assert leader.outcome().index == 0
        errors = []
        for follower in followers:
            follower.join(WAIT)
            errors.append(follower.error)
        assert all(isinstance(e, AuditError) for e in errors), errors
        assert len({id(e) for e in errors}) == 3  # each caller raises its own exception
        assert log.append(sample_entry(4)).index == 1
        assert log.verify().ok


def test_the_next_leader_wakes_the_callers_written_before_even_if_its_own_write_fails(
    tmp_path: Path,
) -> None:
    """Callers of one batch are woken by the next leader just before it commits; a write that
    fails before getting there must still wake them, and their entries stay acknowledged."""
    log, store = gated_log(tmp_path)
    with log:
        first, gate = hold_leader(log, store, 0)
        second, third, fourth = queue_followers(
            log, [lambda i=i: log.append(sample_entry(i)) for i in (1, 2, 3)]
        )
        second_gate = store.gate()
        gate.release.set()  # `second` leads the batch [1, 2, 3], commits, and is held
        assert first.outcome().index == 0
        assert second_gate.held.wait(WAIT)
        (fifth,) = queue_followers(log, [lambda: log.append(sample_entry(4))])
        store.broken = True  # `fifth` will lead, and its write fails before its commit
        assert third.is_alive() and fourth.is_alive()  # written, not yet woken
        second_gate.release.set()
        assert second.outcome().index == 1
        assert (third.outcome().index, fourth.outcome().index) == (2, 3)
        fifth.join(WAIT)
        assert isinstance(fifth.error, AuditError)
        assert store.batches == [1, 3, 1]
        assert log.append(sample_entry(5)).index == 4
        assert log.verify().ok


def test_a_waiter_that_times_out_is_withdrawn_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditlog, "APPEND_TIMEOUT_SECONDS", 0.2)
    log, store = gated_log(tmp_path)
    with log:
        leader, gate = hold_leader(log, store, 0)
        with pytest.raises(AuditError, match="in time"):
            log.append(sample_entry(1))
        assert len(log._pending) == 0  # withdrawn: it will never be written
        gate.release.set()
        assert leader.outcome().index == 0
        assert log.append(sample_entry(2)).index == 1
        assert [e.leaf_hash for e in log.entries(0, 2)] == [
            leaf_hash(to_leaf(sample_entry(i))[0]) for i in (0, 2)
        ]


def test_close_finishes_the_appends_in_progress(tmp_path: Path) -> None:
    log, store = gated_log(tmp_path)
    leader, gate = hold_leader(log, store, 0)
    (follower,) = queue_followers(log, [lambda: log.append(sample_entry(1))])
    closer = Caller(log.close)
    wait_until(lambda: log._closed)
    with pytest.raises(AuditError, match="closed"):
        log.append(sample_entry(2))
    assert closer.is_alive()  # it cannot close the store under a commit in progress
    gate.release.set()
    closer.outcome()
    assert (leader.outcome().index, follower.outcome().index) == (0, 1)
    key = load_db_key(tmp_path / "audit.key")
    with AuditLog(tmp_path / "audit.db", key, origin=ORIGIN) as reopened:
        assert reopened.size() == 2 and reopened.verify().ok


def test_close_waits_for_the_checkpoint_a_leader_is_signing(tmp_path: Path) -> None:
    log, store = gated_log(tmp_path, signing_key=SigningKey(b"\x01" * 32), checkpoint_every=2)
    log.append(sample_entry(0))
    gate = store.checkpoint_gate = Gate()
    writer = Caller(lambda: log.append(sample_entry(1)))  # makes a checkpoint due, signs it
    assert gate.held.wait(WAIT)
    closer = Caller(log.close)
    wait_until(lambda: log._closed)
    assert closer.is_alive()  # the store stays open under the signer
    gate.release.set()
    closer.outcome()
    assert writer.outcome().index == 1 and writer.error is None
    key = load_db_key(tmp_path / "audit.key")
    signer = NoteSigner(ORIGIN, SigningKey(b"\x01" * 32))
    with AuditLog(tmp_path / "audit.db", key, origin=ORIGIN) as reopened:
        cp, _, _ = open_checkpoint(reopened.checkpoint(), signer.verifier)
        assert cp.size == 2


def test_two_logs_on_one_file_interleave_without_losing_entries(tmp_path: Path) -> None:
    """Two handles are two connections, as two processes would be: each append reads the
    size and frontier under the write lock, so neither trusts what it wrote last."""
    first = open_log(tmp_path)
    second = open_log(tmp_path)
    receipts: list[AppendReceipt] = []
    lock = threading.Lock()

    def writer(log: AuditLog, w: int) -> None:
        for i in range(20):
            r = log.append(sample_entry(w * 100 + i))
            with lock:
                receipts.append(r)

    threads = [
        threading.Thread(target=writer, args=(log, w)) for w, log in enumerate([first, second] * 4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(r.index for r in receipts) == list(range(160))
        stored = {e.index: e.leaf_hash for e in first.entries(0, 160)}
        assert all(stored[r.index] == r.leaf_hash for r in receipts)
        assert first.verify().ok and second.root() == first.root()
    finally:
        first.close()
        second.close()
