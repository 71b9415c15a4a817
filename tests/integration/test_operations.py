"""Operating a federation: real gunicorn processes started with deploy/gunicorn.conf.py, real
SQLCipher stores, real keys, the embedded Rego engine, a query through an agency's gateway.

- ``/metrics`` under two broker workers (prometheus-client multiprocess mode, set up by the
  gunicorn configuration) counts each query once, whichever worker is scraped, with labels that
  hold metadata only.
- Every log line of every process is JSON; the broker's query line carries the request and query
  ids; no log line and no metric holds a criteria value, even at debug level with access logs on.
- The 200 answers of the gateway and provider APIs validate against the served OpenAPI document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.envelope import sign
from ibex.keys import MemberKeys, b64
from ibex.messages import Decision, ProviderRequest, Reason, RoutedQuery
from ibex.protocol import build_query, new_id, new_nonce
from ibex.timeutil import format_ts, now
from tests.integration.test_federation import example
from tests.support.openapi_check import check_request, check_response

CRITERIA = {
    "name.surname": "Kovalenko",
    "name.given_names": "Olena",
    "date_of_birth": "1987-03-14",
}
SECRETS = ("kovalenko", "olena", "1987-03-14", "cbsa-officer-99")
MEMBERS = DEMO_MEMBERS[:3]  # CA-CBSA, CA-RCMP, US-CBP


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IBEX_GUNICORN_LOGLEVEL", "debug")
        mp.setenv("IBEX_GUNICORN_ACCESSLOG", "-")
        # Each gunicorn master makes its own metrics directory (deploy/gunicorn.conf.py).
        mp.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        fed = LocalFederation(tmp_path_factory.mktemp("operations"), members=MEMBERS)
        fed.create()
        fed.seed("US-CBP", "person", [example("person", "CBP-P-1")])
        try:
            fed.start(["broker"], workers=2)
            fed.start([m.id for m in MEMBERS], workers=1)
            yield fed
        finally:
            fed.stop()


@pytest.fixture(scope="module")
def answer(fed: LocalFederation) -> dict[str, Any]:
    request = {
        "officer": "cbsa-officer-99",
        "purpose": "border_screening",
        "legal_basis": "us_19_usc_1628",
        "jurisdiction": "CA",
        "subject_type": "person",
        "mode": "full",
        "criteria": CRITERIA,
        "requested_fields": ["name", "date_of_birth", "nationalities", "sex"],
        "targets": ["US-CBP", "CA-RCMP"],
    }
    doc = openapi(fed, "CA-CBSA")
    check_request(doc, "/v1/gateway/queries", "post", request)
    resp = fed.gateway("CA-CBSA", request)
    assert resp.status_code == 200, resp.text
    body = dict(resp.json())
    check_response(doc, "/v1/gateway/queries", "post", 200, "application/json", body)
    statuses = {r["target"]: r["status"] for r in body["results"]}
    assert statuses == {"US-CBP": "answered", "CA-RCMP": "denied"}
    return body


def openapi(fed: LocalFederation, name: str) -> dict[str, Any]:
    resp = httpx.get(fed.nodes[name].url + "/v1/openapi.json", trust_env=False)
    assert resp.status_code == 200
    return dict(resp.json())


def scrape(fed: LocalFederation, name: str = "broker") -> str:
    # A new connection each time, so that both workers get scraped over a few calls.
    resp = httpx.get(fed.nodes[name].url + "/metrics", trust_env=False, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return resp.text


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_each_query_once_across_workers(
    fed: LocalFederation, answer: dict[str, Any]
) -> None:
    for _ in range(6):
        text = scrape(fed)
        common = {"purpose": "border_screening"}
        assert sample(text, "ibex_broker_queries_total", **common) == 1.0
        assert (
            sample(
                text,
                "ibex_broker_target_results_total",
                **common,
                partner="US-CBP",
                decision="allow",
                status="answered",
            )
            == 1.0
        )
        assert (
            sample(
                text,
                "ibex_broker_target_results_total",
                **common,
                partner="CA-RCMP",
                decision="deny",
                status="denied",
            )
            == 1.0
        )
        for stage in ("verify", "decide", "route"):
            assert sample(text, "ibex_broker_stage_seconds_count", stage=stage) == 1.0
        assert sample(text, "ibex_broker_stage_seconds_count", stage="audit") == 2.0
        assert sample(text, "ibex_audit_append_seconds_count", log="audit") == 2.0
        assert sample(text, "ibex_audit_append_failures_total", log="audit") is None
        assert (sample(text, "ibex_audit_entries", log="audit") or 0) >= 4
        assert sample(text, "ibex_audit_unusable", log="audit") == 0.0
        assert answer["query_id"] not in text
        assert not any(s in text.lower() for s in SECRETS)
    provider = scrape(fed, "US-CBP")
    assert sample(provider, "ibex_audit_append_seconds_count", log="disclosures") == 1.0
    assert (
        sample(provider, "ibex_http_requests_total", route="/v1/provider/queries", status="200")
        == 1.0
    )


def log_lines(fed: LocalFederation) -> dict[str, list[str]]:
    return {
        name: (fed.root / f"{name}.log").read_text(encoding="utf-8").splitlines()
        for name in fed.nodes
    }


def test_logs_are_json_with_ids_and_no_criteria_values(
    fed: LocalFederation, answer: dict[str, Any]
) -> None:
    logs = log_lines(fed)
    assert all(logs.values()), "every process logged something"
    for name, lines in logs.items():
        for line in lines:
            record = json.loads(line)  # every line is one JSON object
            assert {"ts", "level", "logger", "msg"} <= set(record), (name, line)
            lowered = line.lower()
            assert not any(s in lowered for s in SECRETS), (name, line)
            if record["logger"] == "gunicorn.access":
                assert "?" not in record["path"]
                assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])
    [answered] = [json.loads(line) for line in logs["broker"] if '"msg":"query answered"' in line]
    loggers = {json.loads(line)["logger"] for lines in logs.values() for line in lines}
    assert not loggers & {"httpcore.connection", "httpcore.http11", "httpx"}
    assert answered["query_id"] == answer["query_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", answered["request_id"])
    assert (answered["answered"], answered["denied"], answered["failed"]) == (1, 1, 0)
    records = [json.loads(line) for line in logs["broker"]]
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    intake = [a for a in access if a["path"] == "/v1/queries"]
    assert intake and intake[0]["request_id"] == answered["request_id"]


def test_provider_answer_validates_against_openapi(fed: LocalFederation) -> None:
    keys = {m.id: MemberKeys.load(fed.root / m.id / "keys", m.id) for m in MEMBERS}
    broker = MemberKeys.load(fed.root / "broker" / "keys", fed.broker_id)
    out = build_query(
        keys["CA-CBSA"],
        officer="cbsa-officer-99",
        purpose="border_screening",
        legal_basis="us_19_usc_1628",
        jurisdiction="CA",
        subject_type="person",
        mode="full",
        criteria=CRITERIA,
        requested_fields=["name", "nationalities"],
        targets={"US-CBP": bytes(keys["US-CBP"].encryption_key.public_key)},
    )
    decision = Decision(
        target="US-CBP",
        allow=True,
        mode="full",
        fields=("name", "nationalities"),
        withheld=(),
        reasons=(Reason("test.allowed", "The test allows this query."),),
        policy_digest="sha256:" + "0" * 64,
        handling="H1",
        retention_days=30,
        agreement="TEST--AGREEMENT",
    )
    t = now()
    routed = RoutedQuery(
        v=1,
        routing_id=new_id(),
        target="US-CBP",
        issued_at=format_ts(t),
        expires_at=format_ts(t + 60),
        nonce=new_nonce(),
        query=out.envelope,
        decision=decision,
    )
    env = sign(RoutedQuery.PAYLOAD_TYPE, routed.to_bytes(), broker.signing_key)
    body = ProviderRequest(routed=env, sealed_criteria=b64(out.sealed["US-CBP"])).to_bytes()
    doc = openapi(fed, "US-CBP")
    check_request(doc, "/v1/provider/queries", "post", json.loads(body))
    resp = httpx.post(
        fed.nodes["US-CBP"].url + "/v1/provider/queries",
        content=body,
        headers={"Content-Type": "application/json"},
        trust_env=False,
    )
    assert resp.status_code == 200, resp.text
    check_response(doc, "/v1/provider/queries", "post", 200, "application/json", resp.json())
