"""``ibex audit``: verify passes on a good store and names the first bad index after tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ibex.cli import main
from ibex.note import NoteSigner
from ibex.store import load_db_key, open_encrypted
from tests.unit.test_auditlog import ORIGIN, open_log, sample_entry

KEY = SigningKey(b"\x01" * 32)


VKEY = NoteSigner(ORIGIN, KEY).verifier.vkey


@pytest.fixture
def store(tmp_path: Path) -> Path:
    with open_log(tmp_path, KEY, checkpoint_every=5) as log:
        for i in range(12):
            log.append(sample_entry(i))
        log.sign_checkpoint()
    return tmp_path


def args(tmp: Path, *rest: str) -> list[str]:
    db = ["--db", str(tmp / "audit.db"), "--db-key-file", str(tmp / "audit.key")]
    return ["audit", rest[0], *db, "--public-key", VKEY, *rest[1:]]


def tamper(tmp: Path, *sql: str) -> None:
    conn = open_encrypted(tmp / "audit.db", load_db_key(tmp / "audit.key"))
    for stmt in sql:
        conn.execute(stmt)
    conn.close()


def test_verify_passes_on_an_untouched_store(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(store, "verify")) == 0
    assert "audit log OK: 12 entries" in capsys.readouterr().out


def test_changed_entry_bytes_are_named(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(
        store,
        "UPDATE leaves SET leaf = CAST(replace(CAST(leaf AS TEXT), 'CA-CBSA', 'CA-RCMP')"
        " AS BLOB) WHERE idx = 7",
    )
    assert main(args(store, "verify")) == 1
    assert "first bad index 7" in capsys.readouterr().err


def test_deleted_entry_is_named(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(store, "DELETE FROM leaves WHERE idx = 4")
    assert main(args(store, "verify")) == 1
    assert "first bad index 4" in capsys.readouterr().err


def test_swapped_entries_are_named(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(
        store,
        "UPDATE leaves SET idx = -1 WHERE idx = 3",
        "UPDATE leaves SET idx = 3 WHERE idx = 9",
        "UPDATE leaves SET idx = 9 WHERE idx = -1",
    )
    assert main(args(store, "verify")) == 1
    assert "first bad index 3" in capsys.readouterr().err


def test_a_rewritten_tree_fails_against_its_signed_checkpoints(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Drop the last two entries and every trace of them in the tree: only checkpoints remember.
    tamper(store, "DELETE FROM leaves WHERE idx >= 10", "UPDATE meta SET v = '10' WHERE k = 'size'")
    assert main(args(store, "verify")) == 1
    assert "beyond the log size" in capsys.readouterr().err


def test_wrong_public_key_fails(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = NoteSigner(ORIGIN, SigningKey.generate()).verifier.vkey
    cmd = args(store, "verify")
    cmd[cmd.index(VKEY)] = other
    assert main(cmd) == 1
    assert "no signature from a trusted key" in capsys.readouterr().err


def test_proof_export_and_checkpoint(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(store, "proof", "--index", "3", "--size", "12")) == 0
    assert len(json.loads(capsys.readouterr().out)["hashes"]) == 4
    assert main(args(store, "proof", "--old", "5", "--new", "12")) == 0
    assert json.loads(capsys.readouterr().out)["hashes"]
    out = store / "export.jsonl"
    assert main(args(store, "export", "--out", str(out))) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(12))
    assert rows[0]["entry"]["kind"] == "decision" and not rows[0]["purged"]
    assert main(args(store, "checkpoint")) == 0
    assert capsys.readouterr().out.startswith(ORIGIN + "\n12\n")
    assert main(args(store, "proof", "--index", "3")) == 2  # half a request is a usage error
