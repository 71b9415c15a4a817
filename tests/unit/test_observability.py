"""The JSON log formatter, the metrics' label discipline and the OPA bundle / ConfigMap writer."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml

from ibex.logs import JsonFormatter, logconfig
from ibex.metrics import METRIC_NAMES, exposition, purpose_label, record_answer
from ibex.opabundle import configmap, main, unflatten, write_opa_bundle
from ibex.policy_bundle import PolicyBundle

ROOT = Path(__file__).resolve().parents[2]


def fmt(record: logging.LogRecord) -> dict[str, object]:
    return dict(json.loads(JsonFormatter().format(record)))


def test_message_arguments_and_unknown_extras_never_reach_the_log() -> None:
    rec = logging.makeLogRecord(
        {"name": "ibex.x", "msg": "no match for %s", "args": ("Kovalenko",), "levelname": "INFO"}
    )
    rec.__dict__.update({"query_id": "q-1", "surname": "Kovalenko", "purpose": "a b c"})
    out = fmt(rec)
    assert out["msg"] == "no match for %s" and out["args_dropped"] is True
    assert "Kovalenko" not in json.dumps(out)
    assert out["query_id"] == "q-1" and "purpose" not in out  # free text is not an identifier
    numbers = logging.makeLogRecord(
        {"name": "x", "msg": "%d workers", "args": (3,), "levelname": "INFO"}
    )
    assert fmt(numbers)["msg"] == "3 workers"


def test_exceptions_are_their_type_and_frames_only() -> None:
    try:
        raise ValueError("criteria value Kovalenko")
    except ValueError:
        rec = logging.makeLogRecord({"msg": "failed", "levelname": "ERROR"})
        rec.exc_info = sys.exc_info()
    out = fmt(rec)
    assert out["exc_type"] == "ValueError" and out["exc_frames"]
    assert "Kovalenko" not in json.dumps(out)


def test_access_lines_keep_the_path_without_query_string() -> None:
    atoms = {"m": "GET", "U": "/v1/audit/entries", "q": "start=0&end=5", "s": "200",
             "B": "12", "M": "3", "{x-request-id}o": "abc123", "a": "curl/8"}  # fmt: skip
    rec = logging.makeLogRecord({"name": "gunicorn.access", "msg": "%(U)s", "levelname": "INFO"})
    rec.args = atoms
    out = fmt(rec)
    assert out["path"] == "/v1/audit/entries" and out["status"] == 200
    assert out["request_id"] == "abc123"
    assert "start=0" not in json.dumps(out) and "curl" not in json.dumps(out)
    assert logconfig("info", "/var/log/x.log")["handlers"]["access"]["filename"] == "/var/log/x.log"


def test_metric_labels_are_bounded_and_hold_no_ids() -> None:
    assert purpose_label("border_screening", {"border_screening"}) == "border_screening"
    assert purpose_label("Kovalenko", {"border_screening"}) == "other"
    results = [
        {"target": "US-CBP", "status": "answered", "decision": {"allow": True}, "elapsed_ms": 12},
        {"target": "ZZ-NOPE", "status": "denied",
         "decision": {"allow": False, "reasons": [{"rule": "engine.timeout"}]}},
    ]  # fmt: skip
    record_answer("other", results, {"US-CBP"})
    text = exposition().decode()
    assert 'partner="other"' in text and "ZZ-NOPE" not in text
    assert 'ibex_policy_engine_errors_total{rule="engine.timeout"}' in text
    for name in METRIC_NAMES:
        if not name.startswith("ibex_audit_") or "append" in name:
            assert name.removesuffix("_total") in text, name


def test_opa_bundle_and_configmap_round_trip(tmp_path: Path) -> None:
    policies = ROOT / "policies"
    original = PolicyBundle.load(policies)
    bundle = write_opa_bundle(policies, tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / ".manifest").read_text())
    assert manifest["revision"] == bundle.digest == original.digest
    assert set(manifest["roots"]) == {"ibex", "ibex_data"}
    data = json.loads((tmp_path / "bundle" / "ibex_data" / "data.json").read_text())
    assert data == original.data["ibex_data"]
    assert not list((tmp_path / "bundle").rglob("*_test.rego"))
    cm = configmap(policies, "ibex-policies", "ibex")
    assert cm["metadata"]["annotations"]["ibex.example/policy-digest"] == original.digest
    mounted = tmp_path / "mounted"
    (mounted / "..2026_01_01").mkdir(parents=True)  # what a ConfigMap volume also holds
    for key, text in yaml.safe_load(yaml.safe_dump(cm))["data"].items():
        (mounted / key).write_text(text)
        (mounted / "..2026_01_01" / key).write_text(text)
    unflatten(mounted, tmp_path / "rebuilt")
    assert PolicyBundle.load(tmp_path / "rebuilt").digest == original.digest
    assert (
        main(["bundle", "--policies", str(tmp_path / "rebuilt"), "--out", str(tmp_path / "b2")])
        == 0
    )
