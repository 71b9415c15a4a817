"""The /v1/audit blueprint, and the CLI's remote verify and witness commands against it."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, request
from nacl.signing import SigningKey
from werkzeug.serving import make_server

from ibex.audit_api import make_audit_blueprint
from ibex.auditlog import AuditLog
from ibex.errors import Forbidden
from ibex.keys import MemberKeys
from ibex.merkle import verify_consistency, verify_inclusion
from ibex.note import NoteSigner, open_checkpoint
from ibex.web import register_error_handlers
from tests.unit.test_audit_cli import main
from tests.unit.test_auditlog import ORIGIN, open_log, sample_entry

KEY = SigningKey(b"\x02" * 32)
VKEY = NoteSigner(ORIGIN, KEY).verifier
WITNESS = MemberKeys.generate("CA-CBSA")


def make_app(log: AuditLog) -> Flask:
    app = Flask("audit-test")
    register_error_handlers(app)

    def oversight() -> None:
        if request.headers.get("X-Role") != "oversight":
            raise Forbidden("the audit entries are for the oversight role")

    witnesses = {"CA-CBSA": WITNESS.public.signing}
    app.register_blueprint(
        make_audit_blueprint(
            lambda: log, authorize_oversight=oversight, witness_keys=lambda: witnesses
        )
    )
    return app


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with open_log(tmp_path, KEY) as audit:
        audit.append_many([sample_entry(i) for i in range(10)])
        audit.purge_expired(0)  # nothing expired yet
        yield audit


def test_checkpoint_and_proofs_are_public_and_verify(log: AuditLog) -> None:
    client = make_app(log).test_client()
    resp = client.get("/v1/audit/checkpoint")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    cp, _, _ = open_checkpoint(resp.get_data(as_text=True), VKEY)
    assert cp.size == 10
    body = client.get(f"/v1/audit/proof/inclusion?index=4&size={cp.size}").get_json()
    proof = [base64.b64decode(h) for h in body["hashes"]]
    leaf = log.entries(4, 5)[0].leaf_hash
    verify_inclusion(leaf, 4, cp.size, proof, cp.root)
    body = client.get("/v1/audit/proof/consistency?old=3&new=10").get_json()
    verify_consistency(3, 10, log.root(3), cp.root, [base64.b64decode(h) for h in body["hashes"]])


def test_entries_need_oversight_and_show_exact_leaves(log: AuditLog) -> None:
    client = make_app(log).test_client()
    resp = client.get("/v1/audit/entries?start=0&end=3")
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    log.purge_expired(4_000_000_000)
    body = client.get("/v1/audit/entries?start=0&end=3", headers={"X-Role": "oversight"}).get_json()
    assert [e["index"] for e in body["entries"]] == [0, 1, 2]
    assert all(e["purged"] and "leaf" not in e for e in body["entries"])
    assert (
        body["entries"][0]["leaf_hash"] == base64.b64encode(log.entries(0, 1)[0].leaf_hash).decode()
    )


@pytest.mark.parametrize(
    "query",
    [
        "/v1/audit/entries?start=0",
        "/v1/audit/entries?start=0&end=0",
        "/v1/audit/entries?start=0&end=1001",
        "/v1/audit/entries?start=0&end=11",
        "/v1/audit/entries?start=-1&end=2",
        "/v1/audit/entries?start=01&end=2",
        "/v1/audit/entries?start=0&end=2&start=1",
        "/v1/audit/entries?start=0&end=2&extra=1",
        "/v1/audit/entries?start=%EF%BC%91&end=2",  # a full-width digit is not a decimal
        "/v1/audit/proof/inclusion?index=10&size=10",
        "/v1/audit/proof/inclusion?index=0&size=11",
        "/v1/audit/proof/inclusion?index=0&size=0",
        "/v1/audit/proof/inclusion?index=x&size=1",
        "/v1/audit/proof/consistency?old=5&new=4",
        "/v1/audit/proof/consistency?old=0&new=99999999999999999999",
    ],
)
def test_bad_parameters_are_problem_json(log: AuditLog, query: str) -> None:
    resp = make_app(log).test_client().get(query, headers={"X-Role": "oversight"})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["code"] == "bad-input"


def test_cosignature_endpoint_refuses_strangers(log: AuditLog) -> None:
    client = make_app(log).test_client()
    note = client.get("/v1/audit/checkpoint").get_data(as_text=True)
    resp = client.post("/v1/audit/cosignature", data=note, content_type="text/plain")
    assert resp.status_code == 401 and resp.get_json()["code"] == "signer-untrusted"
    resp = client.post("/v1/audit/cosignature", data="junk", content_type="text/plain")
    assert resp.status_code == 400
    resp = client.post("/v1/audit/cosignature", data=note, content_type="application/json")
    assert resp.status_code == 415


@pytest.fixture
def served(log: AuditLog) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, make_app(log), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_remote_verify_witness_and_tamper(
    log: AuditLog, served: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    WITNESS.save(tmp_path / "keys")
    state, saved = tmp_path / "witness.txt", tmp_path / "seen.txt"
    remote = ["--url", served, "--public-key", VKEY.vkey]
    common: list[str] = ["audit", "witness", *remote, "--state", str(state)]
    witness = [*common, "--key-dir", str(tmp_path / "keys"), "--member", "CA-CBSA"]
    assert main(witness) == 0
    assert "cosigned" in capsys.readouterr().out
    assert "\u2014 CA-CBSA " in log.checkpoint()
    saved.write_text(log.checkpoint())
    log.append_many([sample_entry(100 + i) for i in range(5)])
    log.sign_checkpoint()
    assert main(witness) == 0  # consistent with what it saw last: cosigns again
    wvkey = NoteSigner("CA-CBSA", WITNESS.signing_key, 0x04).verifier.vkey
    cmd = ["audit", "verify", *remote, "--checkpoint", str(saved), "--witness", wvkey]
    assert main([*cmd, "--entries", "--header", "X-Role: oversight"]) == 0
    out = capsys.readouterr().out
    assert "size 10 -> 15 consistent; cosigned by CA-CBSA" in out
    # A log that presents a different history at the saved size is caught.
    forged = open_log(tmp_path / "forged", KEY)
    forged.append_many([sample_entry(500 + i) for i in range(12)])
    forged.sign_checkpoint()
    forged_server = make_server("127.0.0.1", 0, make_app(forged), threaded=True)
    t = threading.Thread(target=forged_server.serve_forever, daemon=True)
    t.start()
    try:
        bad = ["audit", "verify", "--url", f"http://127.0.0.1:{forged_server.server_port}"]
        assert main([*bad, "--public-key", VKEY.vkey, "--checkpoint", str(saved)]) == 1
        assert "not an append-only extension" in capsys.readouterr().err
    finally:
        forged_server.shutdown()
        t.join()
        forged.close()
