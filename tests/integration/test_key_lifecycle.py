"""Key lifecycle: member rotation with an overlap, revocation, and broker key rotation.

Member keys are changed through the operator's commands (``ibex broker member rotate-key`` and
``revoke-key``) and exercised against the broker's real intake (in process: real SQLCipher
stores, real Rego). The broker's own rotation runs against real gunicorn processes: connectors
configured with the *old* broker key keep working after the broker restarts with the new one,
because they learned it from the overlap document the old key co-signed. The federation client's
trust rules (learn, bound by the listed validity, survive a restart, refuse the retired key after
the overlap and any older document) are checked against a loopback server of crafted documents.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from broker.app import create_app
from broker.services import BrokerServices
from ibex.auditlog import AuditLog
from ibex.cli import main
from ibex.config import BrokerConfig, load_config
from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.envelope import Envelope, add_signature, sign, verify
from ibex.errors import SignatureError, UntrustedSigner
from ibex.federation import FederationClient
from ibex.keys import MemberKeys, b64, load_public
from ibex.messages import (
    PT_FEDERATION,
    BrokerInfo,
    FederationDocument,
    MemberKey,
    Query,
    RoutedQuery,
)
from ibex.store import load_db_key
from ibex.timeutil import format_ts, now
from tests.support.factories import person_query

DAY = 86400.0
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def keys(fed: LocalFederation, member: str) -> MemberKeys:
    return MemberKeys.load(fed.root / member / "keys", member)


def cli(command: str) -> int:
    """Run one ``ibex`` command line (no argument here contains a space)."""
    return main(command.split())


def audit_details(config_path: Path) -> list[dict[str, Any]]:
    config = load_config(BrokerConfig, config_path)
    key = load_db_key(config.db_key_file, config.db_key_env)
    origin = f"{config.federation}.ibex/{config.broker_id.lower()}/audit"
    with AuditLog(config.data_dir / "audit.db", key, origin=origin) as log:
        entries = [json.loads(e.leaf) for e in log.entries(0, log.size()) if e.leaf is not None]
    return [e["details"] for e in entries if e["kind"] == "membership"]


# --- member keys, against the broker's intake ---------------------------------------------------


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    fed = LocalFederation(
        tmp_path_factory.mktemp("keys"),
        members=DEMO_MEMBERS[:3],
        extra_broker_settings={"target_timeout_seconds": 0.5, "overall_deadline_seconds": 1.0},
    )
    fed.create()
    return fed


@pytest.fixture(scope="module")
def app(fed: LocalFederation) -> Iterator[tuple[FlaskClient, BrokerServices]]:
    config = load_config(BrokerConfig, fed.nodes["broker"].config)
    svc = BrokerServices.open(config)
    yield create_app(config, services=svc).test_client(), svc
    svc.close()


def ask(client: FlaskClient, signer: MemberKeys, target: MemberKeys) -> Any:
    body = person_query(signer, {target.member: target}).intake_request().to_bytes()
    return client.post("/v1/queries", data=body, content_type="application/json")


def test_rotation_overlap(
    fed: LocalFederation, app: tuple[FlaskClient, BrokerServices], tmp_path: Path
) -> None:
    client, svc = app
    old, cbp = keys(fed, "CA-CBSA"), keys(fed, "US-CBP")
    new = MemberKeys.generate("CA-CBSA")
    new.save(tmp_path)
    broker_config = fed.nodes["broker"].config
    public = tmp_path / "CA-CBSA.public.json"
    rotate = f"broker member rotate-key --config {broker_config} --member CA-CBSA"
    assert cli(f"{rotate} --public-keys {public} --overlap-days 1") == 0
    # During the overlap both signing keys verify.
    assert ask(client, old, cbp).status_code == 200
    assert ask(client, new, cbp).status_code == 200
    # After it, only the new one does (checked at a time after the overlap: the broker's
    # time window does not let a query claim a future issued_at).
    trust = svc.members.trust()
    later = now() + 2 * DAY
    old_env = person_query(old, {"US-CBP": cbp}).envelope
    new_env = person_query(new, {"US-CBP": cbp}).envelope
    verify(new_env, trust, payload_type=Query.PAYLOAD_TYPE, at=later)
    with pytest.raises(UntrustedSigner, match="key expired"):
        verify(old_env, trust, payload_type=Query.PAYLOAD_TYPE, at=later)
    # Senders seal to the newest encryption key at once.
    from ibex.federation import encryption_key

    member = svc.members.get("CA-CBSA")
    assert encryption_key(member) == new.public.encryption
    assert {k.keyid for k in member.keys} >= {old.signing_keyid, new.signing_keyid}
    rotated = [d for d in audit_details(broker_config) if d.get("action") == "rotate-key"]
    assert rotated[-1]["signing_keyid"] == new.signing_keyid


def test_revocation(fed: LocalFederation, app: tuple[FlaskClient, BrokerServices]) -> None:
    client, svc = app
    cbp, rcmp = keys(fed, "US-CBP"), keys(fed, "CA-RCMP")
    earlier = person_query(cbp, {"CA-RCMP": rcmp})  # signed before the revocation
    assert ask(client, cbp, rcmp).status_code == 200
    time.sleep(0.01)
    broker_config = fed.nodes["broker"].config
    revoke = f"broker member revoke-key --config {broker_config} --member US-CBP --keyid"
    assert cli(f"{revoke} {cbp.signing_keyid}") == 0
    time.sleep(0.01)
    # Signed after the revocation: refused.
    resp = ask(client, cbp, rcmp)
    assert resp.status_code == 401
    assert resp.get_json()["code"] == "signer-untrusted"
    assert "revoked" in resp.get_json()["detail"]
    # Signed before it: still verifies, for the audit trail.
    issued = earlier.query.issued_at
    from ibex.timeutil import parse_ts

    verified = verify(
        earlier.envelope, svc.members.trust(), payload_type=Query.PAYLOAD_TYPE, at=parse_ts(issued)
    )
    assert verified.signers == {"US-CBP": cbp.signing_keyid}
    revoked = [d for d in audit_details(broker_config) if d.get("action") == "revoke-key"]
    assert revoked[-1]["keyid"] == cbp.signing_keyid
    # Revoking twice, or a key the member does not have, is refused.
    assert cli(f"{revoke} {cbp.signing_keyid}") == 2
    assert cli(f"{revoke} {'0' * 32}") == 2


# --- the broker's key, with real processes ------------------------------------------------------


def example(entity: str, source_id: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / entity / "valid-full.json").read_text())
    doc["record"]["source_id"] = source_id
    return dict(doc)


QUERY = {
    "officer": "cbsa-officer-17",
    "purpose": "border_screening",
    "legal_basis": "us_19_usc_1628",
    "jurisdiction": "CA",
    "subject_type": "person",
    "mode": "full",
    "criteria": {
        "name.surname": "Kovalenko",
        "name.given_names": "Olena",
        "date_of_birth": "1987-03-14",
    },
    "requested_fields": ["name", "date_of_birth"],
    "targets": ["US-CBP"],
}


def stored_version(fed: LocalFederation, member: str) -> int:
    env = Envelope.parse((fed.root / member / "data" / "federation.json").read_bytes())
    return FederationDocument.parse(env.payload).version


def test_broker_key_rotation_with_running_connectors(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    fed = LocalFederation(tmp_path_factory.mktemp("brokerkey"), members=DEMO_MEMBERS[:3])
    fed.create()
    fed.seed("US-CBP", "person", [example("person", "CBP-P-1")])
    broker_config = fed.nodes["broker"].config
    old_public = load_public(fed.root / "broker" / "keys" / "IBEX-BROKER.public.json")
    with fed.running():
        first = fed.gateway("CA-CBSA", QUERY).json()
        assert first["results"][0]["verification"] == "verified"
        version = stored_version(fed, "CA-CBSA")
        assert cli(f"broker rotate-key --config {broker_config} --overlap-days 1") == 0
        new_public = load_public(fed.root / "broker" / "keys" / "IBEX-BROKER.public.json")
        assert new_public.signing_keyid != old_public.signing_keyid
        # The overlap document lists both keys and is signed by both.
        resp = httpx.get(fed.nodes["broker"].url + "/v1/federation", trust_env=False)
        env = Envelope.parse(resp.content)
        assert {s.keyid for s in env.signatures} == {
            old_public.signing_keyid,
            new_public.signing_keyid,
        }
        doc = FederationDocument.parse(env.payload)
        assert [k.keyid for k in doc.broker.keys] == [
            old_public.signing_keyid,
            new_public.signing_keyid,
        ]
        assert doc.broker.keys[0].valid_until is not None
        # Connectors configured with the old key only pick it up within their poll interval.
        deadline = time.monotonic() + 10
        for member in ("CA-CBSA", "US-CBP"):
            while stored_version(fed, member) == version and time.monotonic() < deadline:
                httpx.get(fed.nodes[member].url + "/readyz", timeout=5, trust_env=False)
                time.sleep(0.2)
            assert stored_version(fed, member) == doc.version
        # The broker restarts with the new key: routed queries, countersignatures and the
        # aggregate are now signed by it, and both connectors accept them.
        fed.stop(["broker"])
        fed.start(["broker"])
        second = fed.gateway("CA-CBSA", QUERY).json()
        [result] = second["results"]
        assert result["status"] == "answered", result
        assert result["verification"] == "verified"
    # The connectors were started with the old broker key and never restarted: they verified
    # the new key's routed queries and answers with the key they learned. The old key is kept.
    retired = fed.root / "broker" / "keys" / "retired" / old_public.signing_keyid
    assert load_public(retired / "IBEX-BROKER.public.json") == old_public
    actions = [d for d in audit_details(broker_config) if d.get("action") == "broker-rotate-key"]
    assert actions[-1]["new_keyid"] == new_public.signing_keyid


# --- the federation client's trust, against crafted documents ------------------------------------


class _Docs:
    """A loopback server that hands out whatever document the test sets."""

    def __init__(self) -> None:
        self.body = b""
        self.delay = 0.0  # seconds the "broker" takes to answer, as when all its threads are busy
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                time.sleep(outer.delay)
                self.send_response(200 if outer.body else 404)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def docs_server() -> Iterator[_Docs]:
    server = _Docs()
    try:
        yield server
    finally:
        server.close()


def broker_key(k: MemberKeys, start: float, until: float | None = None) -> MemberKey:
    pub = k.public
    end = format_ts(until) if until is not None else None
    return MemberKey(
        "signing", "ed25519", b64(pub.signing), pub.signing_keyid, format_ts(start), end
    )


def document(version: int, listed: list[MemberKey], *signers: MemberKeys) -> bytes:
    doc = FederationDocument(
        v=1,
        federation="ibex-test",
        version=version,
        issued_at=format_ts(now()),
        broker=BrokerInfo("IBEX-BROKER", "http://127.0.0.1:9", tuple(listed)),
        members=(),
    )
    env = sign(PT_FEDERATION, doc.to_bytes(), signers[0].signing_key)
    for s in signers[1:]:
        env = add_signature(env, s.signing_key)
    return env.to_bytes()


def test_a_stale_document_is_refreshed_in_the_background(tmp_path: Path) -> None:
    """A provider whose copy is older than max_age keeps answering with it while the refresh
    runs, instead of waiting on a broker that may itself be waiting on this provider."""
    key = MemberKeys.generate("IBEX-BROKER")
    listed = [broker_key(key, now() - 1)]
    with docs_server() as docs:
        client = FederationClient(
            docs.url, [bytes(key.signing_key.verify_key)], max_age=0.2, max_stale=30.0
        )
        docs.body = document(1, listed, key)
        assert client.current().version == 1  # no document yet: this one waits
        docs.body, docs.delay = document(2, listed, key), 1.0
        time.sleep(0.3)
        started = time.monotonic()
        assert client.current().version == 1  # stale: answered at once from the held copy
        assert client.current().version == 1
        assert time.monotonic() - started < 0.5
        deadline = time.monotonic() + 10
        while client.current().version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.current().version == 2
        assert docs.requests == 2  # one background fetch, however many stale reads
        client.close()


def test_an_unknown_signer_fetches_a_fresher_document_once(tmp_path: Path) -> None:
    """A message signed by a key the held document does not list yet (a member who has just
    joined, a key just rotated) waits for one fresh document instead of being refused on the
    stale copy; within max_age of the last fetch it is refused without asking the broker."""
    old, new = MemberKeys.generate("IBEX-BROKER"), MemberKeys.generate("IBEX-BROKER")
    t = now()
    signed_by_new = sign(RoutedQuery.PAYLOAD_TYPE, b"{}", new.signing_key)
    with docs_server() as docs:
        client = FederationClient(
            docs.url, [bytes(old.signing_key.verify_key)], max_age=0.3, max_stale=30.0
        )
        docs.body = document(1, [broker_key(old, t - 1)], old)
        assert client.current().version == 1
        docs.body = document(2, [broker_key(old, t - 1), broker_key(new, t - 1)], old)
        with pytest.raises(UntrustedSigner):  # fetched just now: no second fetch
            client.verify(signed_by_new, payload_type=RoutedQuery.PAYLOAD_TYPE)
        assert docs.requests == 1
        time.sleep(0.4)
        verified = client.verify(
            signed_by_new, payload_type=RoutedQuery.PAYLOAD_TYPE, require_signers=["IBEX-BROKER"]
        )
        assert "IBEX-BROKER" in verified.signers
        assert client.current().version == 2 and docs.requests == 2
        client.close()


def test_past_max_stale_the_caller_waits_for_the_broker(tmp_path: Path) -> None:
    key = MemberKeys.generate("IBEX-BROKER")
    listed = [broker_key(key, now() - 1)]
    with docs_server() as docs:
        client = FederationClient(
            docs.url, [bytes(key.signing_key.verify_key)], max_age=0.1, max_stale=0.3
        )
        docs.body = document(1, listed, key)
        assert client.current().version == 1
        docs.body = document(2, listed, key)
        time.sleep(0.4)
        assert client.current().version == 2  # too old to serve: fetched before answering
        client.close()


def test_client_learns_the_new_broker_key(tmp_path: Path) -> None:
    old, new = MemberKeys.generate("IBEX-BROKER"), MemberKeys.generate("IBEX-BROKER")
    cache = tmp_path / "federation.json"
    t = now()
    with docs_server() as docs:
        client = FederationClient(docs.url, [bytes(old.signing_key.verify_key)], cache_file=cache)
        # The overlap document: both keys listed, signed by both.
        docs.body = document(5, [broker_key(old, 0, t + DAY), broker_key(new, t - 1)], old, new)
        assert client.refresh().version == 5
        # After the overlap: the old key has ended; a document signed by the new key only.
        docs.body = document(6, [broker_key(old, 0, t - 1), broker_key(new, t - 1)], new)
        assert client.refresh().version == 6
        # Someone holding the retired key signs a newer document: refused.
        docs.body = document(7, [broker_key(old, 0)], old)
        with pytest.raises(UntrustedSigner, match="key expired"):
            client.refresh()
        # An older document, even properly signed: refused.
        docs.body = document(4, [broker_key(new, t - 1)], new)
        with pytest.raises(SignatureError, match="already held"):
            client.refresh()
        client.close()
        # A restart re-derives the trust from the configured (old) key and the saved chain.
        docs.body = b""
        again = FederationClient(docs.url, [bytes(old.signing_key.verify_key)], cache_file=cache)
        assert again.current().version == 6
        docs.body = document(8, [broker_key(new, t - 1)], new)
        assert again.refresh().version == 8
        again.close()
