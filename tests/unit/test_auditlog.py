"""The audit log store: appends, group commit, proofs, checkpoints, witnesses, retention, faults."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from ibex.auditentry import new_entry, to_leaf, validate_entry
from ibex.auditlog import AuditLog
from ibex.auditstore import _DDL
from ibex.errors import (
    AuditError,
    BadInput,
    NotFound,
    SchemaValidationError,
    SignatureError,
    StoreError,
    UntrustedSigner,
)
from ibex.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_count,
    reference_consistency_proof,
    reference_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from ibex.note import SIG_COSIGNATURE_V1, NoteSigner, open_checkpoint, parse_note
from ibex.store import generate_db_key_file, load_db_key, open_encrypted

ORIGIN = "ibex.example/audit/test"
T0 = 1_800_000_000.0  # a fixed instant: tests never depend on the clock


def sample_entry(i: int = 0, *, kind: str = "decision", days: int = 30) -> dict[str, Any]:
    return new_entry(
        kind,
        retention_days=days,
        at=T0 + i,
        query_id=f"123e4567-e89b-12d3-a456-{i:012d}",
        requester="CA-CBSA",
        officer="psn-7f3a",
        purpose="border_screening",
        legal_basis="ca.irpa.s8",
        subject_type="person",
        criteria_fields=["surname", "birth_date"],
        target="US-CBP",
        decision={
            "allow": True,
            "mode": "hit_no_hit",
            "fields": ["surname"],
            "withheld": [],
            "rule_ids": ["agreement.allow"],
            "policy_digest": "sha256:" + "ab" * 32,
        },
    )


def open_log(tmp_path: Path, key: SigningKey | None = None, **kw: Any) -> AuditLog:
    key_file = tmp_path / "audit.key"
    if not key_file.exists():
        generate_db_key_file(key_file)
    return AuditLog(
        tmp_path / "audit.db",
        load_db_key(key_file),
        origin=ORIGIN,
        signing_key=key or SigningKey(b"\x01" * 32),
        create=True,
        **kw,
    )


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with open_log(tmp_path) as audit:
        yield audit


def test_append_returns_indexes_and_leaf_hashes(log: AuditLog) -> None:
    assert log.size() == 0 and log.root() == EMPTY_ROOT
    receipts = [log.append(sample_entry(i)) for i in range(5)]
    assert [r.index for r in receipts] == list(range(5))
    entries = log.entries(0, 10)
    assert [e.leaf_hash for e in entries] == [r.leaf_hash for r in receipts]
    assert all(leaf_hash(e.leaf or b"") == e.leaf_hash and not e.purged for e in entries)
    assert log.root() == root_from_leaf_hashes([r.leaf_hash for r in receipts])
    assert log.append_many([]) == []


def test_invalid_entries_are_refused_before_touching_the_log(log: AuditLog) -> None:
    bad = sample_entry()
    bad["criteria"] = {"surname": "SMITH"}
    with pytest.raises(SchemaValidationError) as info:
        log.append(bad)
    assert [e.pointer for e in info.value.errors] == ["/criteria"]
    with pytest.raises(SchemaValidationError):
        log.append_many([sample_entry(1), {"v": 1}])
    assert log.size() == 0


def test_concurrent_appends_share_commits_and_stay_contiguous(log: AuditLog) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        for i in range(25):
            r = log.append(sample_entry(w * 100 + i))
            with lock:
                got.append(r.index)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(400))
    assert log.verify().ok


def test_proofs_match_the_reference_at_every_size(log: AuditLog) -> None:
    receipts = log.append_many([sample_entry(i) for i in range(37)])
    hashes = [r.leaf_hash for r in receipts]
    for size in range(1, 38):
        root = log.root(size)
        assert root == root_from_leaf_hashes(hashes[:size])
        for index in {0, size // 2, size - 1}:
            proof = log.inclusion_proof(index, size)
            assert proof == reference_inclusion_proof(hashes[:size], index)
            verify_inclusion(hashes[index], index, size, proof, root)
        for old in {0, 1, size // 3, size - 1, size}:
            proof = log.consistency_proof(old, size)
            assert proof == reference_consistency_proof(hashes[:size], old)
            verify_consistency(old, size, log.root(old), root, proof)
    with pytest.raises(BadInput):
        log.inclusion_proof(0, 38)
    with pytest.raises(BadInput):
        log.inclusion_proof(5, 5)
    with pytest.raises(BadInput):
        log.consistency_proof(6, 5)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_batches_of_any_shape_build_the_same_tree(
    tmp_path_factory: Any, batches: list[int]
) -> None:
    with open_log(tmp_path_factory.mktemp("log")) as audit:
        hashes: list[bytes] = []
        for n in batches:
            hashes += [
                r.leaf_hash
                for r in audit.append_many([sample_entry(len(hashes) + i) for i in range(n)])
            ]
        assert audit.root() == root_from_leaf_hashes(hashes)
        assert audit.verify().ok


def test_checkpoints_are_signed_on_demand_and_every_n(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with open_log(tmp_path, key, checkpoint_every=4) as audit:
        first = audit.checkpoint()  # on demand for the empty tree
        cp, _, _ = open_checkpoint(first, NoteSigner(ORIGIN, key).verifier)
        assert (cp.size, cp.root) == (0, EMPTY_ROOT)
        for i in range(9):
            audit.append(sample_entry(i))
        audit.close()
    with open_log(tmp_path, key) as audit:
        cp, _, _ = open_checkpoint(audit.checkpoint(), NoteSigner(ORIGIN, key).verifier)
        assert cp.size >= 8 and cp.root == audit.root(cp.size)
        note = audit.sign_checkpoint()
        cp, _, _ = open_checkpoint(note, NoteSigner(ORIGIN, key).verifier)
        assert cp.size == 9
        report = audit.verify()
        assert report.ok and report.checkpoints >= 3


def test_witness_cosignatures_are_verified_and_shown(log: AuditLog) -> None:
    log.append_many([sample_entry(i) for i in range(3)])
    note = log.sign_checkpoint()
    witness = NoteSigner("CA-CBSA", SigningKey.generate(), SIG_COSIGNATURE_V1)
    stranger = NoteSigner("XX-EVIL", SigningKey.generate(), SIG_COSIGNATURE_V1)
    parsed = parse_note(note)
    body = parsed.text.encode()
    trust = {"CA-CBSA": bytes(witness.signing_key.verify_key)}
    with pytest.raises(UntrustedSigner):
        log.add_cosignature(
            parsed.with_signatures([stranger.sign(body, timestamp=1)]).render(), trust
        )
    cosigned = parsed.with_signatures([witness.sign(body, timestamp=1_700_000_000)]).render()
    assert log.add_cosignature(cosigned, trust) == ["CA-CBSA"]
    shown = log.checkpoint()
    assert "\u2014 CA-CBSA " in shown and "XX-EVIL" not in shown
    log_key = NoteSigner(ORIGIN, SigningKey(b"\x01" * 32)).verifier
    _, _, verified = open_checkpoint(shown, log_key, witnesses=[witness.verifier])
    assert [v.verifier.name for v in verified] == [ORIGIN, "CA-CBSA"]
    assert log.verify(witness_keys=trust).cosignatures == 1
    # A checkpoint the log never signed cannot be cosigned into it.
    forged = parsed.text.replace("\n3\n", "\n2\n").encode()
    with pytest.raises(NotFound):
        log.add_cosignature(
            forged.decode() + "\n" + witness.sign(forged, timestamp=1).line(), trust
        )
    future = parsed.with_signatures([witness.sign(body, timestamp=4_000_000_000)]).render()
    with pytest.raises(SignatureError):
        log.add_cosignature(future, trust)


def test_retention_purges_content_but_keeps_the_tree(log: AuditLog) -> None:
    log.append_many([sample_entry(0, days=1), sample_entry(1, days=30), sample_entry(2, days=1)])
    root = log.root()
    assert log.purge_expired(T0 + 10 * 86400) == 2
    entries = log.entries(0, 3)
    assert [e.purged for e in entries] == [True, False, True]
    assert entries[0].leaf is None and len(entries[0].leaf_hash) == 32
    assert log.root() == root
    assert log.verify(now=T0 + 10 * 86400).ok
    assert log.purge_expired(T0 + 10 * 86400) == 0


# Rarely (seen once in ~10 full runs, never alone), the SQLCipher connection dropped after the
# simulated full disk reports "Exception ignored in: None" when it is garbage-collected; what this
# test asserts (refusal, recovery, a verifying log) is unaffected. Filtered here only, and noted
# for a closer look at the C extension's finalizer.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_fails_closed_and_recovers(log: AuditLog) -> None:
    log.append_many([sample_entry(i) for i in range(3)])
    store: Any = log._store
    pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
    store._writer.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(AuditError):
        log.append_many([sample_entry(100 + i) for i in range(3000)])
    # The failed writer was dropped; the reopened one has no page limit: the disk is "back".
    receipt = log.append(sample_entry(9))
    assert receipt.index == 3 and log.size() == 4
    assert log.verify().ok
    gc.collect()  # let the dropped connection's finalizer run here, under this test's filter


def test_closed_log_refuses_appends(tmp_path: Path) -> None:
    audit = open_log(tmp_path)
    audit.append(sample_entry())
    audit.close()
    with pytest.raises(AuditError):
        audit.append(sample_entry(1))


def test_new_entry_fills_version_and_time() -> None:
    entry = new_entry("policy", retention_days=10, at=T0, actor="op-1", details={"bundle": "x1"})
    validate_entry(entry)
    assert entry["v"] == 1 and entry["time"].endswith("Z")


# --- storage layout -------------------------------------------------------------------------


def test_node_keys_are_dense_so_appends_write_at_the_right_edge(log: AuditLog) -> None:
    for n in (1, 2, 5, 1, 13):
        log.append_many([sample_entry(log.size() + i) for i in range(n)])
    store: Any = log._store
    keys = [r[0] for r in store._writer.execute("SELECT id FROM nodes ORDER BY id")]
    assert keys == list(range(node_count(22)))
    assert log.verify().ok


def write_schema_1_store(path: Path, key: bytes, entries: list[dict[str, Any]], size: int) -> None:
    """A store as the schema-1 code wrote it: nodes keyed ``level << 48 | index``, ``size`` row."""
    conn = open_encrypted(path, key, create=True)
    conn.execute("BEGIN IMMEDIATE")
    for stmt in _DDL:
        conn.execute(stmt)
    conn.execute("INSERT INTO meta VALUES ('schema', '1'), ('size', ?)", (str(size),))
    leaves = [to_leaf(e) for e in entries]
    hashes = [leaf_hash(leaf) for leaf, _ in leaves]
    for i, (leaf, expires) in enumerate(leaves):
        conn.execute(
            "INSERT INTO leaves (idx, leaf, expires_at) VALUES (?, ?, ?)", (i, leaf, expires)
        )
    level = 0
    while (1 << level) <= len(hashes):
        for k in range(len(hashes) >> level):
            h = root_from_leaf_hashes(hashes[k << level : (k + 1) << level])
            conn.execute("INSERT INTO nodes VALUES (?, ?)", (level << 48 | k, h))
        level += 1
    conn.execute("COMMIT")
    conn.close()


def test_a_schema_1_store_is_migrated_on_open_and_keeps_its_tree(tmp_path: Path) -> None:
    key = load_db_key(generate_db_key_file(tmp_path / "audit.key"))
    entries = [sample_entry(i) for i in range(21)]
    write_schema_1_store(tmp_path / "audit.db", key, entries, size=21)
    hashes = [leaf_hash(to_leaf(e)[0]) for e in entries]
    with open_log(tmp_path) as log:
        assert log.size() == 21 and log.root() == root_from_leaf_hashes(hashes)
        assert [e.leaf_hash for e in log.entries(0, 21)] == hashes
        assert log.inclusion_proof(5, 21) == reference_inclusion_proof(hashes, 5)
        assert log.consistency_proof(13, 21) == reference_consistency_proof(hashes, 13)
        assert log.append(sample_entry(21)).index == 21
        assert log.verify().ok
        conn: Any = log._store._writer  # type: ignore[attr-defined]
        assert dict(conn.execute("SELECT k, v FROM meta")) == {"schema": "2"}


def test_an_altered_schema_1_store_is_refused_not_migrated(tmp_path: Path) -> None:
    key = load_db_key(generate_db_key_file(tmp_path / "audit.key"))
    write_schema_1_store(tmp_path / "audit.db", key, [sample_entry(i) for i in range(5)], size=4)
    with pytest.raises(StoreError, match="records 4 entries but holds 5"):
        open_log(tmp_path)
    conn = open_encrypted(tmp_path / "audit.db", key)
    assert conn.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()[0] == "1"
    conn.close()
