"""Faults with real processes: partners that answer garbage, forge, over-share or replay, a
partner killed, the broker killed mid-traffic. The aggregate must mark each partner correctly and
nothing unverified may reach the requester.

US-CBP is reached through a loopback relay (ibex.demoproxy) that lets a test replace what the
real connector answered — the stand-in for a compromised or broken partner; every other part is
the real thing (gunicorn processes, SQLCipher stores, keys, Rego).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ibex.auditlog import AuditLog
from ibex.demofed import LocalFederation
from ibex.envelope import sign
from ibex.keys import MemberKeys
from ibex.messages import ProviderAnswer, ProviderResponse
from ibex.store import load_db_key

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"

REQUEST = {
    "officer": "cbsa-officer-17",
    "subject_type": "person",
    "purpose": "border_screening",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "mode": "full",
    "criteria": {
        "name.surname": "Kovalenko",
        "name.given_names": "Olena",
        "date_of_birth": "1987-03-14",
    },
    "requested_fields": ["name", "date_of_birth", "nationalities"],
    "targets": ["US-CBP"],
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(
        tmp_path_factory.mktemp("faults"),
        relayed=frozenset({"US-CBP"}),
        extra_broker_settings={"target_timeout_seconds": 2.0, "overall_deadline_seconds": 3.0},
    )
    fed.create()
    person = json.loads((EXAMPLES / "person" / "valid-full.json").read_text())
    person["record"]["source_id"] = "CBP-P-1"
    fed.seed("US-CBP", "person", [person])
    with fed.running():
        yield fed


def ask(fed: LocalFederation) -> dict[str, Any]:
    resp = fed.gateway("CA-CBSA", REQUEST)
    assert resp.status_code == 200, resp.text
    [result] = resp.json()["results"]
    return dict(result)


def with_tamper(fed: LocalFederation, tamper: Callable[[str, bytes], bytes]) -> dict[str, Any]:
    relay = fed.relays["to:US-CBP"]
    relay.tamper = tamper
    try:
        return ask(fed)
    finally:
        relay.tamper = None


def resigned(fed: LocalFederation, body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Alter the provider's answer and sign it again with the provider's real key."""
    resp = ProviderResponse.parse(body)
    doc = json.loads(resp.answer.payload)
    change(doc)
    key = MemberKeys.load(fed.root / "US-CBP" / "keys", "US-CBP").signing_key
    env = sign(ProviderAnswer.PAYLOAD_TYPE, json.dumps(doc).encode(), key)
    return ProviderResponse(answer=env, sealed_payload=resp.sealed_payload).to_bytes()


def test_the_honest_path_first(fed: LocalFederation) -> None:
    result = ask(fed)
    assert result["status"] == "answered"
    assert result["verification"] == "verified"


def test_garbage_answer(fed: LocalFederation) -> None:
    result = with_tamper(fed, lambda path, body: b"\x00garbage")
    assert result["status"] == "invalid-answer"
    assert "records" not in result


def test_wrong_signature(fed: LocalFederation) -> None:
    def flip(path: str, body: bytes) -> bytes:
        doc = json.loads(body)
        sig = bytearray(base64.b64decode(doc["answer"]["signatures"][0]["sig"]))
        sig[0] ^= 0x01
        doc["answer"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        return json.dumps(doc).encode()

    result = with_tamper(fed, flip)
    assert result["status"] == "invalid-answer"
    assert "does not verify" in result["error"]["detail"]


def test_fields_beyond_the_decision(fed: LocalFederation) -> None:
    def oversharing(path: str, body: bytes) -> bytes:
        return resigned(
            fed, body, lambda d: d.update(fields_released=[*d["fields_released"], "sex"])
        )

    result = with_tamper(fed, oversharing)
    assert result["status"] == "invalid-answer"
    assert "sex" in result["error"]["detail"]


def test_payload_swapped_under_a_valid_signature(fed: LocalFederation) -> None:
    def swap(path: str, body: bytes) -> bytes:
        doc = json.loads(body)
        raw = bytearray(base64.b64decode(doc["sealed_payload"]))
        raw[-1] ^= 0x01
        doc["sealed_payload"] = base64.b64encode(bytes(raw)).decode()
        return json.dumps(doc).encode()

    result = with_tamper(fed, swap)
    assert result["status"] == "invalid-answer"
    assert "digest" in result["error"]["detail"]


def test_replayed_old_answer(fed: LocalFederation) -> None:
    captured: list[bytes] = []

    def record(path: str, body: bytes) -> bytes:
        captured.append(body)
        return body

    assert with_tamper(fed, record)["status"] == "answered"
    result = with_tamper(fed, lambda path, body: captured[0])
    assert result["status"] == "invalid-answer"
    assert "another query" in result["error"]["detail"]


def test_killed_partner_is_unreachable_then_recovers(fed: LocalFederation) -> None:
    fed.stop(["US-CBP"], sig=signal.SIGKILL)
    try:
        result = ask(fed)
        # The relay in front answers 502 for a dead upstream; without it, a refused connection.
        assert result["status"] in ("unreachable", "refused")
        assert "records" not in result
    finally:
        fed.start(["US-CBP"])
    assert ask(fed)["status"] == "answered"


def test_broker_killed_during_traffic_loses_no_acknowledged_query(fed: LocalFederation) -> None:
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                resp = fed.gateway("CA-CBSA", REQUEST, timeout=10)
            except Exception:
                continue
            if resp.status_code == 200 and "query_id" in resp.json():
                with lock:
                    acknowledged.append(resp.json()["query_id"])

    threads = [threading.Thread(target=traffic) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        while True:
            with lock:
                if len(acknowledged) >= 10:
                    break
            threading.Event().wait(0.05)
        broker = fed.nodes["broker"].process
        assert broker is not None
        os.killpg(broker.pid, signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join()
    fed.stop(["broker"])
    with lock:
        seen = list(acknowledged)
    assert len(seen) >= 10

    # Every acknowledged query's intake and answer entries are in the log, and it verifies.
    root = fed.root / "broker"
    key = load_db_key(root / "keys" / "db.key")
    signer = MemberKeys.load(root / "keys", "IBEX-BROKER").signing_key
    from broker.services import audit_origin
    from ibex.config import BrokerConfig, load_config

    origin = audit_origin(load_config(BrokerConfig, fed.nodes["broker"].config))
    with AuditLog(root / "data" / "audit.db", key, origin=origin, signing_key=signer) as log:
        report = log.verify()
        assert report.ok, report.summary()
        kinds: dict[str, set[str]] = {}
        for e in log.entries(0, log.size()):
            if e.leaf:
                entry = json.loads(e.leaf)
                if "query_id" in entry:
                    kinds.setdefault(entry["query_id"], set()).add(entry["kind"])
    for qid in seen:
        assert {"intake", "decision", "answer"} <= kinds.get(qid, set()), qid

    fed.start(["broker"])
    assert ask(fed)["status"] == "answered"


def test_a_routed_query_cannot_be_replayed_after_a_restart(fed: LocalFederation) -> None:
    relay = fed.relays["to:US-CBP"]
    assert ask(fed)["status"] == "answered"
    assert relay.last_request is not None
    path, body = relay.last_request
    assert path == "/v1/provider/queries"
    fed.stop(["US-CBP"])
    fed.start(["US-CBP"])
    # Replay the routed query the broker sent, straight to the restarted US-CBP: its durable
    # nonce store, shared by its workers, refuses it.
    resp = httpx.post(
        fed.nodes["US-CBP"].url + "/v1/provider/queries",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
        trust_env=False,
    )
    assert resp.status_code == 409
    assert resp.json()["code"] == "nonce-replayed"
