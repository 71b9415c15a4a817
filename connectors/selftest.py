"""``ibex connector selftest``: prove a connector speaks the shared schemas before it joins.

A partner that is not yet registered cannot be queried through the real broker (the broker
routes only to members, and a member may not query itself), so the round trip runs against a
**loopback federation** built for the test and thrown away after it:

- a throw-away broker key (``IBEX-SELFTEST``) signs a federation document listing the partner
  (with its *real* public keys) and a throw-away requester (``XX-SELFTEST``); a thread on
  127.0.0.1 serves that document as ``GET /v1/federation``;
- the partner's own connector code (:func:`connectors.app.create_app`, its real key files) runs
  in process over a temporary encrypted store holding the sample, imported with the partner's
  mapping exactly as ``ibex connector import`` would;
- the test plays the broker's part: it signs a routed query with a decision that withholds one
  requested field, checks the provider's answer as the broker does, countersigns it, and hands
  the aggregate to the real gateway verification (:meth:`Gateway.verify_response`), which opens
  the sealed payload with the requester's key and checks every signature and field;
- a routed query signed by a key nobody trusts must be refused.

Passing shows the mapping yields valid records, the keys are the partner's own (it signs and
opens sealed criteria with them), the matcher finds its own record, and the answer is minimised,
signed and sealed as the protocol says. The real broker round trip follows approval (the
first query in docs/PARTNER.md). The report carries counts, digests, JSON pointers and rule
messages, never a record value, and is signed with the partner's signing key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from connectors.importer import ImportReport, import_file
from connectors.mapping import Mapping as FieldMapping
from connectors.mapping import load_mapping
from connectors.matching import CRITERIA_FIELDS
from connectors.records import RecordStore
from ibex.canonical import digest_bytes
from ibex.config import ConnectorConfig
from ibex.envelope import Envelope, TrustStore, add_signature, sign, verify
from ibex.errors import BadInput, IbexError
from ibex.federation import build_trust
from ibex.keys import MemberKeys, b64, load_public
from ibex.messages import (
    PT_CONFORMANCE_REPORT,
    BrokerAnswer,
    BrokerInfo,
    BrokerResponse,
    ConformanceCheck,
    ConformanceReport,
    Decision,
    FederationDocument,
    Member,
    MemberKey,
    ProviderAnswer,
    ProviderRequest,
    ProviderResponse,
    Reason,
    RoutedQuery,
    SampleError,
    TargetResult,
)
from ibex.protocol import build_query, decode_sealed, new_id, new_nonce
from ibex.schemas import registry
from ibex.store import generate_db_key_file, load_db_key
from ibex.timeutil import format_ts, now

BROKER_ID = "IBEX-SELFTEST"
PEER_ID = "XX-SELFTEST"
MAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class SelftestResult:
    report: ConformanceReport
    envelope: Envelope

    def to_text(self) -> str:
        r = self.report
        lines = [
            f"selftest of {r.member}: {r.entity_type} {r.schema_version}: "
            + ("PASSED" if r.passed else "FAILED"),
            f"  sample: {r.sample_valid} of {r.sample_rows} row(s) valid",
        ]
        lines.extend(f"  [{'ok' if c.passed else 'FAIL'}] {c.id}: {c.detail}" for c in r.checks)
        lines.extend(f"  row {e.row}: {e.pointer or '/'}: {e.detail}" for e in r.errors[:20])
        return "\n".join(lines)


def _software() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ibex/{version('ibex')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "ibex/dev"


def run_selftest(
    config: ConnectorConfig,
    *,
    entity_type: str,
    sample: Path,
    mapping: Path | None = None,
    schema_version: str | None = None,
    fmt: str | None = None,
) -> SelftestResult:
    """Validate the mapping and ``sample``, run the loopback round trip, sign the report."""
    versions = registry().entity_types()
    if entity_type not in versions:
        raise BadInput(f"no shared schema for {entity_type!r}")
    version = versions[entity_type]
    if schema_version is not None and schema_version != version:
        raise BadInput(f"this connector validates {entity_type} {version}, not {schema_version}")
    keys = MemberKeys.load(config.keys_dir, config.member_id)
    try:
        sample_bytes = sample.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the sample {sample}: {exc.strerror}") from None
    checks: list[ConformanceCheck] = [_check_keys(config, keys)]
    field_mapping: FieldMapping | None = None
    mapping_digest = None
    if mapping is not None:
        mapping_digest = digest_bytes(mapping.read_bytes())
        try:
            field_mapping = load_mapping(mapping)
            if field_mapping.entity_type not in (None, entity_type):
                raise BadInput(f"the mapping is for {field_mapping.entity_type} records")
            checks.append(ConformanceCheck("mapping", True, "the mapping loads"))
        except IbexError as exc:
            checks.append(ConformanceCheck("mapping", False, exc.detail[:500]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ibex-selftest-") as tmp:
        work = Path(tmp)
        db_key = work / "db.key"
        generate_db_key_file(db_key)
        data = work / "data"
        data.mkdir(mode=0o700)
        store = RecordStore.open_or_create(data / "records.db", load_db_key(db_key))
        try:
            imported = import_file(
                store, sample, entity_type, fmt=fmt, mapping=field_mapping, progress=False
            )
            first = store.load([1]).get(1) if imported.accepted and imported.rows else None
        finally:
            store.close()
        bad_rows = {e.row for e in imported.errors}
        valid = max(imported.rows - len(bad_rows), 0)
        checks.append(
            ConformanceCheck(
                "sample-valid",
                imported.accepted and imported.rows > 0,
                f"{valid} of {imported.rows} row(s) valid against {entity_type} {version}",
            )
        )
        if first is None:
            checks.append(
                ConformanceCheck("round-trip", False, "skipped: the sample did not import")
            )
        else:
            overrides = {"data_dir": data, "db_key_file": db_key}
            checks.extend(
                _round_trip(config, keys, entity_type, version, first.body, work, overrides)
            )
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    report = ConformanceReport(
        v=1,
        report_id=new_id(),
        member=keys.member,
        generated_at=format_ts(now()),
        software=_software(),
        signing_keyid=keys.public.signing_keyid,
        encryption_keyid=keys.public.encryption_keyid,
        entity_type=entity_type,
        schema_version=version,
        sample_digest=digest_bytes(sample_bytes),
        sample_rows=imported.rows,
        sample_valid=valid,
        checks=tuple(checks),
        passed=all(c.passed for c in checks),
        mapping_digest=mapping_digest,
        errors=_errors(imported),
        round_trip_ms=elapsed,
    )
    payload = report.to_bytes()
    ConformanceReport.parse(payload)
    return SelftestResult(report, sign(PT_CONFORMANCE_REPORT, payload, keys.signing_key))


def _errors(imported: ImportReport) -> tuple[SampleError, ...]:
    return tuple(
        SampleError(e.row, e.pointer[:300], e.message[:300]) for e in imported.errors[:MAX_ERRORS]
    )


def _check_keys(config: ConnectorConfig, keys: MemberKeys) -> ConformanceCheck:
    """The private keys load, and match the public key file the partner will publish."""
    published = config.keys_dir / f"{keys.member}.public.json"
    try:
        public = load_public(published)
    except IbexError as exc:
        return ConformanceCheck("keys", False, exc.detail[:500])
    if public != keys.public:
        return ConformanceCheck("keys", False, f"{published.name} is not the private keys' pair")
    return ConformanceCheck("keys", True, f"signing key {keys.public.signing_keyid}")


# --- the loopback round trip -----------------------------------------------------------------


def _criteria(entity_type: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Criteria taken from the partner's own first sample record (so it must match itself)."""
    out: dict[str, Any] = {}
    for key in sorted(CRITERIA_FIELDS.get(entity_type, ())):
        value: Any = record
        for step in key.split("."):
            value = value.get(step) if isinstance(value, Mapping) else None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[key] = value
    return out


def _signing_key(keys: MemberKeys, at: float) -> MemberKey:
    return MemberKey(
        "signing", "ed25519", b64(keys.public.signing), keys.signing_keyid, format_ts(at)
    )


def _member(keys: MemberKeys, country: str, schemas: Mapping[str, tuple[str, ...]]) -> Member:
    pub = keys.public
    at = now() - 3600
    return Member(
        id=keys.member,
        name=keys.member,
        country=country,
        agency_kind="other",
        jurisdictions=(country,),
        endpoint="http://127.0.0.1:9",
        status="active",
        keys=(
            _signing_key(keys, at),
            MemberKey(
                "encryption", "x25519", b64(pub.encryption), pub.encryption_keyid, format_ts(at)
            ),
        ),
        schemas=schemas,
    )


@contextlib.contextmanager
def _serve_document(envelope: Envelope) -> Iterator[str]:
    body = envelope.to_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/v1/federation"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _round_trip(
    config: ConnectorConfig,
    keys: MemberKeys,
    entity_type: str,
    version: str,
    record: Mapping[str, Any],
    work: Path,
    overrides: Mapping[str, Any],
) -> list[ConformanceCheck]:
    from connectors.app import create_app
    from connectors.gateway import Gateway
    from ibex.federation import FederationClient

    criteria = _criteria(entity_type, record)
    fields = sorted(f for f in record if f != "record")
    if not criteria or not fields:
        return [ConformanceCheck("round-trip", False, "the first sample record has no criteria")]
    broker = MemberKeys.generate(BROKER_ID)
    peer = MemberKeys.generate(PEER_ID)
    country = keys.member.split("-")[0][:2] if keys.member[:2].isalpha() else "XX"
    schemas = {entity_type: (version,)}
    doc = FederationDocument(
        v=1,
        federation="ibex-selftest",
        version=1,
        issued_at=format_ts(now()),
        broker=BrokerInfo(BROKER_ID, "http://127.0.0.1:9", (_signing_key(broker, now() - 3600),)),
        members=(_member(keys, country, schemas), _member(peer, "XX", schemas)),
    )
    env = sign(FederationDocument.PAYLOAD_TYPE, doc.to_bytes(), broker.signing_key)
    broker_public = work / "broker.public.json"
    broker_public.write_bytes(_public_json(broker))
    with _serve_document(env) as url:
        settings = {
            **overrides,
            "broker_url": url,
            "broker_public_key_file": broker_public,
            "db_key_env": None,
            "local_policy_dir": None,
            "gateway_token_file": None,
        }
        tested = dataclasses.replace(config, **settings)
        app = create_app(tested)
        client = app.test_client()
        federation = FederationClient(url, [bytes(broker.signing_key.verify_key)])
        peer_config = dataclasses.replace(tested, member_id=PEER_ID, keys_dir=work)
        gateway = Gateway(config=peer_config, keys=peer, federation=federation)
        try:
            return _exchange(client, doc, keys, broker, peer, gateway, criteria, fields, schemas)
        finally:
            gateway.close()
            federation.close()
            app.extensions["ibex"].close()


def _public_json(keys: MemberKeys) -> bytes:
    from ibex.jsonio import dumps

    return dumps(keys.public.to_json())


def _exchange(
    client: Any,
    doc: FederationDocument,
    keys: MemberKeys,
    broker: MemberKeys,
    peer: MemberKeys,
    gateway: Any,
    criteria: Mapping[str, Any],
    fields: list[str],
    schemas: Mapping[str, tuple[str, ...]],
) -> list[ConformanceCheck]:
    [(entity_type, (version,))] = schemas.items()
    allowed = fields[:-1] if len(fields) > 1 else fields
    out = build_query(
        peer,
        officer="selftest",
        purpose="border_screening",
        legal_basis="selftest",
        jurisdiction=doc.members[0].country,
        subject_type=entity_type,
        mode="full",
        criteria=criteria,
        requested_fields=fields,
        targets={keys.member: keys.public.encryption},
        schema_version=version,
    )
    decision = Decision(
        target=keys.member,
        allow=True,
        mode="full",
        fields=tuple(allowed),
        withheld=tuple(sorted(set(fields) - set(allowed))),
        reasons=(Reason("selftest.loopback", "A loopback conformance test; no partner asked."),),
        policy_digest="sha256:" + "0" * 64,
        handling="TLP:AMBER",
        retention_days=1,
        agreement="selftest",
    )

    def routed(signer: MemberKeys) -> bytes:
        issued = now()
        rq = RoutedQuery(
            v=1,
            routing_id=new_id(),
            target=keys.member,
            issued_at=format_ts(issued),
            expires_at=format_ts(issued + 60),
            nonce=new_nonce(),
            query=out.envelope,
            decision=decision,
        )
        signed = sign(RoutedQuery.PAYLOAD_TYPE, rq.to_bytes(), signer.signing_key)
        sealed = b64(out.sealed[keys.member])
        return ProviderRequest(routed=signed, sealed_criteria=sealed).to_bytes()

    checks: list[ConformanceCheck] = []
    forged = client.post(
        "/v1/provider/queries",
        data=routed(MemberKeys.generate(BROKER_ID)),
        content_type="application/json",
    )
    checks.append(
        ConformanceCheck(
            "refuses-forged-routing",
            forged.status_code == 401,
            f"a routed query signed by an unknown key got HTTP {forged.status_code}",
        )
    )
    resp = client.post("/v1/provider/queries", data=routed(broker), content_type="application/json")
    if resp.status_code != 200:
        detail = f"the provider answered HTTP {resp.status_code}"
        problem = resp.get_json(silent=True)
        if isinstance(problem, dict) and isinstance(problem.get("code"), str):
            detail += f" ({problem['code']})"
        return [*checks, ConformanceCheck("round-trip", False, detail)]
    try:
        answer, sealed = _broker_checks(resp.get_data(), doc, decision, keys)
    except IbexError as exc:
        return [*checks, ConformanceCheck("round-trip", False, exc.detail[:500])]
    countersigned = add_signature(answer, broker.signing_key)
    aggregate = BrokerAnswer(
        v=1,
        query_id=out.query.query_id,
        requester=peer.member,
        answered_at=format_ts(now()),
        policy_digest=decision.policy_digest,
        results=(TargetResult(keys.member, "answered", decision=decision, answer=countersigned),),
    )
    body = BrokerResponse(
        answer=sign(BrokerAnswer.PAYLOAD_TYPE, aggregate.to_bytes(), broker.signing_key),
        sealed_payloads={keys.member: sealed},
    ).to_bytes()
    try:
        verified = gateway.verify_response(body, out.query.query_id, [keys.member])
    except IbexError as exc:
        return [*checks, ConformanceCheck("round-trip", False, exc.detail[:500])]
    result = verified["results"][0]
    records = result.get("records") or []
    ok = result.get("verification") == "verified" and bool(records)
    checks.append(
        ConformanceCheck(
            "round-trip",
            ok,
            f"{len(records)} record(s) found, signed, sealed and verified"
            if ok
            else f"verification: {result.get('verification')}; records: {len(records)}",
        )
    )
    extra = sorted({f for r in records for f in r["record"]} - set(allowed))
    withheld = ", ".join(decision.withheld) or "none"
    checks.append(
        ConformanceCheck(
            "minimisation",
            ok and not extra,
            f"withheld {withheld}; fields beyond the decision: {', '.join(extra) or 'none'}",
        )
    )
    return checks


def _broker_checks(
    body: bytes, doc: FederationDocument, decision: Decision, keys: MemberKeys
) -> tuple[Envelope, str]:
    """What the broker checks before countersigning (docs/PROTOCOL.md section 7)."""
    resp = ProviderResponse.parse(body)
    trust: TrustStore = build_trust(doc)
    verified = verify(
        resp.answer, trust, payload_type=ProviderAnswer.PAYLOAD_TYPE, require_signers=[keys.member]
    )
    answer = ProviderAnswer.parse(verified.payload)
    if answer.status != "answered":
        why = answer.refusal.code if answer.refusal else "no reason"
        raise BadInput(f"the provider refused its own record ({why})")
    if not set(answer.fields_released) <= set(decision.fields):
        raise BadInput("the provider released fields the decision did not allow")
    if answer.count < 1:
        raise BadInput("the provider did not find its own sample record")
    if resp.sealed_payload is None:
        raise BadInput("the answer carries no sealed payload")
    if digest_bytes(decode_sealed(resp.sealed_payload, what="sealed payload")) != (
        answer.payload_digest
    ):
        raise BadInput("the sealed payload does not match the signed digest")
    return resp.answer, resp.sealed_payload
