"""Each rule and each reason, through the Python engine wrapper, with real regorus and the
shipped agreements; and the wrapper's fail-closed handling of engine errors, undefined and
malformed results and timeouts."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ibex.messages import Decision, Query
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import RegorusEngine, build_input
from tests.support.policy_corpus import member

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
SCREENING = "CA-CBSA--US-CBP--screening-2026"
INVESTIGATIONS = "CA-RCMP--US-CBP--investigations-2026"


@pytest.fixture(scope="module")
def engine() -> RegorusEngine:
    return RegorusEngine(PolicyBundle.load(ROOT / "policies"), cache_size=0)


def query(requester: str = "US-CBP", **changes: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "requester": requester,
        "officer": "officer-4711",
        "purpose": "border_screening",
        "legal_basis": "ca_customs_act_s107",
        "jurisdiction": "US",
        "subject_type": "person",
        "schema_version": "1.0",
        "mode": "full",
        "criteria_fields": ["date_of_birth", "name.given_names", "name.surname"],
        "requested_fields": ["aliases", "date_of_birth", "name"],
    }
    q.update(changes)
    return {k: v for k, v in q.items() if v is not None}


def investigation(**changes: Any) -> dict[str, Any]:
    base = {
        "purpose": "criminal_investigation",
        "legal_basis": "ca_privacy_act_s8_2_f",
        "case_reference": "CBP-OFO-2026-118",
        "seriousness": "serious",
    }
    return query(**{**base, **changes})


def decide(
    engine: RegorusEngine,
    q: dict[str, Any],
    target: str = "CA-CBSA",
    *,
    status: str = "active",
    at: float = NOW,
) -> Decision:
    return engine.decide(build_input(q, member(target, status), member(q["requester"]), at))


def rules(decision: Decision) -> list[str]:
    return [r.rule for r in decision.reasons]


def test_allowed_and_minimised(engine: RegorusEngine) -> None:
    d = decide(engine, query())
    assert d.allow and d.mode == "full" and d.agreement == SCREENING
    assert d.fields == ("date_of_birth", "name") and d.withheld == ("aliases",)
    assert d.handling == "H1" and d.retention_days == 365
    assert rules(d) == ["allow.agreement", "fields.withheld", "handling.applied"]
    assert d.reasons[0].citation == "Customs Act, R.S.C. 1985, c. 1 (2nd Supp.), s. 107(8)"
    assert d.reasons[0].clause == f"{SCREENING}: legal_bases"
    assert d.policy_digest == engine.bundle.digest and d.target == "CA-CBSA"
    Decision.from_json(d.to_json())  # the decision is valid against its schema


def test_built_from_a_query_message(engine: RegorusEngine) -> None:
    message = Query.from_json(
        {
            "v": 1,
            "query_id": "0b5f8a4e-1d2c-4e5f-8a9b-0c1d2e3f4a5b",
            "issued_at": "2026-11-28T12:00:00Z",
            "expires_at": "2026-11-28T12:05:00Z",
            "nonce": "AAAAAAAAAAAAAAAAAAAAAA",
            "targets": [{"member": "CA-CBSA", "criteria_digest": "sha256:" + "0" * 64}],
            **query(),
        }
    )
    inp = build_input(message, member("CA-CBSA"), member("US-CBP"), NOW)
    assert inp["query"]["follow_up"] is False and inp["query"]["officer_confirmed"] is False
    assert inp["now"] == "2026-11-28T12:00:00.000Z"
    assert engine.decide(inp).allow


@pytest.mark.parametrize(
    ("q", "target", "expected"),
    [
        (query(purpose="criminal_investigation"), "CA-CBSA", {"purpose.not_covered"}),
        (query(purpose="tourism"), "CA-CBSA", {"purpose.unknown", "purpose.not_covered"}),
        (query(legal_basis="x_act"), "CA-CBSA", {"legal_basis.unknown", "legal_basis.not_covered"}),
        (
            query(purpose="migration_management"),
            "CA-CBSA",
            {"legal_basis.not_for_purpose"},
        ),
        (
            query(jurisdiction="MX"),
            "CA-CBSA",
            {"jurisdiction.not_requester", "jurisdiction.outside"},
        ),
        (query(criteria_fields=["name.surname"]), "CA-CBSA", {"criteria.insufficient"}),
        (query(requested_fields=["name", "shoe_size"]), "CA-CBSA", {"fields.unknown"}),
        (investigation(case_reference=None), "CA-RCMP", {"case_reference.missing"}),
        (investigation(seriousness="minor"), "CA-RCMP", {"seriousness.too_low"}),
        (query("CA-RCMP", jurisdiction="CA"), "MX-INM", {"agreement.none"}),
    ],
    ids=[
        "purpose-not-covered",
        "purpose-unknown",
        "legal-basis-unknown",
        "legal-basis-not-for-purpose",
        "jurisdiction",
        "minimum-criteria",
        "unknown-field",
        "case-reference",
        "seriousness",
        "no-agreement",
    ],
)
def test_denials_say_why(
    engine: RegorusEngine, q: dict[str, Any], target: str, expected: set[str]
) -> None:
    d = decide(engine, q, target)
    assert not d.allow and d.mode == "none" and d.fields == ()
    assert set(rules(d)) >= expected
    assert d.agreement is None and d.handling is None and d.retention_days is None
    assert all(r.text.endswith(".") for r in d.reasons)


def test_expired_agreement(engine: RegorusEngine) -> None:
    q = query(
        "MX-INM",
        jurisdiction="MX",
        legal_basis="us_8_usc_1105",
        subject_type="travel_document",
        criteria_fields=["document_number", "issuing_country"],
        requested_fields=["status"],
    )
    d = decide(engine, q, "US-CBP")
    assert rules(d) == ["agreement.expired"]
    assert d.reasons[0].text == (
        "Agreement US-CBP--MX-INM--pilot-2023 expired on 2024-12-31 and no longer allows any "
        "disclosure."
    )
    earlier = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    assert decide(engine, q, "US-CBP", at=earlier).allow


def test_suspended_provider(engine: RegorusEngine) -> None:
    d = decide(engine, query(), status="suspended")
    assert rules(d) == ["provider.inactive"]


def test_hit_no_hit_versus_full(engine: RegorusEngine) -> None:
    first = decide(engine, investigation(), "CA-RCMP")
    assert first.allow and first.mode == "hit_no_hit" and first.fields == ()
    assert "mode.downgraded" in rules(first)
    asked = decide(engine, query(mode="hit_no_hit", requested_fields=[]))
    assert asked.allow and asked.mode == "hit_no_hit" and "mode.downgraded" not in rules(asked)


def follow_up(confirmed: bool = True, **changes: Any) -> dict[str, Any]:
    return investigation(
        follow_up={"officer_confirmed": confirmed}, criteria_fields=["reference"], **changes
    )


def test_follow_up_allowed(engine: RegorusEngine) -> None:
    d = decide(engine, follow_up(), "CA-RCMP")
    assert d.allow and d.mode == "full" and d.agreement == INVESTIGATIONS
    assert d.fields == ("aliases", "date_of_birth", "name")
    assert "follow_up.full" in rules(d)


def test_follow_up_unconfirmed(engine: RegorusEngine) -> None:
    d = decide(engine, follow_up(confirmed=False), "CA-RCMP")
    assert not d.allow and rules(d) == ["follow_up.unconfirmed"]


def test_follow_up_not_allowed(engine: RegorusEngine) -> None:
    q = query(
        "MX-INM",
        purpose="migration_management",
        legal_basis="ca_irpa_s8",
        jurisdiction="MX",
        subject_type="travel_document",
        case_reference="INM-2026-1",
        criteria_fields=["reference"],
        requested_fields=["status"],
        follow_up={"officer_confirmed": True},
    )
    d = decide(engine, q, "CA-CBSA")
    assert not d.allow and rules(d) == ["follow_up.not_allowed"]


def test_follow_up_needs_seriousness(engine: RegorusEngine) -> None:
    d = decide(engine, follow_up(seriousness=None), "CA-RCMP")
    assert not d.allow and set(rules(d)) == {"seriousness.missing", "seriousness.too_low"}


# --- the wrapper fails closed ------------------------------------------------------------------


def _bundle_with_decision(tmp_path: Path, rego: str) -> PolicyBundle:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "ibex/decision.rego").write_text(rego)
    return PolicyBundle.load(policies)


def _only_reason(d: Decision) -> str:
    assert not d.allow and d.mode == "none" and d.fields == ()
    assert len(d.reasons) == 1
    return d.reasons[0].rule


def test_engine_error_denies(tmp_path: Path) -> None:
    bundle = _bundle_with_decision(
        tmp_path, "package ibex\n\ndecision := x if {\n\tx := 1\n}\n\ndecision := 2 if true\n"
    )
    d = RegorusEngine(bundle).decide(build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW))
    assert _only_reason(d) == "engine.error"


def test_undefined_denies(tmp_path: Path) -> None:
    bundle = _bundle_with_decision(tmp_path, "package ibex\n\ndecision := 1 if false\n")
    d = RegorusEngine(bundle).decide(build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW))
    assert _only_reason(d) == "engine.undefined"


@pytest.mark.parametrize(
    "value",
    [
        '{"allow": true}',
        '{"allow": true, "mode": "full", "fields": ["name"], "withheld": [], "handling": "H1",'
        ' "retention_days": 30, "agreement": "no-such-agreement",'
        ' "reasons": [{"rule": "allow.agreement", "text": "yes"}]}',
        '{"allow": false, "mode": "none", "fields": ["name"], "withheld": [], "handling": null,'
        ' "retention_days": null, "agreement": null, "reasons": [{"rule": "x", "text": "no"}]}',
        '{"allow": "yes", "mode": "full", "fields": [], "withheld": [], "handling": "H1",'
        ' "retention_days": 30, "agreement": "CA-CBSA--US-CBP--screening-2026", "reasons": []}',
    ],
    ids=["partial", "foreign-agreement", "deny-with-fields", "not-boolean"],
)
def test_malformed_result_denies(tmp_path: Path, value: str) -> None:
    bundle = _bundle_with_decision(tmp_path, f"package ibex\n\ndecision := {value}\n")
    d = RegorusEngine(bundle).decide(build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW))
    assert _only_reason(d) == "engine.error"


def test_timeout_denies() -> None:
    slow = RegorusEngine(PolicyBundle.load(ROOT / "policies"), timeout=1e-9)
    d = slow.decide(build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW))
    assert _only_reason(d) == "engine.timeout"


def test_garbage_input_denies(engine: RegorusEngine) -> None:
    d = engine.decide({"target": "CA-CBSA", "query": "nonsense"})
    assert not d.allow and "input.invalid" in rules(d)


def test_cache_returns_the_same_decision_on_the_same_day() -> None:
    cached = RegorusEngine(PolicyBundle.load(ROOT / "policies"))
    inp = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW)
    later = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW + 3600)
    first = cached.decide(inp)
    assert cached.decide(later) == first
    assert cached.cache_hits == 1
    next_day = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW + 86400)
    cached.decide(next_day)
    assert cached.cache_hits == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (1, 1.0),
        ("1", 1),
        (None, "None"),
        (False, None),
        ([1], [[1]]),
        (["a", "b"], ["a,b"]),
        ({"a": "b"}, {"a": "b "}),
        ({"a": ["b"]}, {"a": "b"}),
        ("é", "e\u0301"),
    ],
)
def test_the_cache_key_tells_apart_inputs_that_differ_only_in_type_or_form(a: Any, b: Any) -> None:
    """Equal keys must mean equal inputs, type for type: a key that confused True with 1 would
    hand one input the decision made for another."""
    cached = RegorusEngine(PolicyBundle.load(ROOT / "policies"))
    inp = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW)
    first = {**inp, "query": {**inp["query"], "follow_up": a}}
    second = {**inp, "query": {**inp["query"], "follow_up": b}}
    assert cached._cache_key(first) != cached._cache_key(second)
    assert cached._cache_key(first) == cached._cache_key(json.loads(json.dumps(first)))


def test_an_input_the_cache_key_cannot_encode_is_decided_not_cached() -> None:
    class Label(str):
        pass

    cached = RegorusEngine(PolicyBundle.load(ROOT / "policies"))
    inp = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW)
    odd = {**inp, "target": Label("CA-CBSA")}
    assert cached._cache_key(odd) is None
    assert cached.decide(odd).allow and cached.decide(odd).allow
    assert cached.cache_hits == 0


def test_the_officer_is_not_policy_input() -> None:
    """Who asks is personal data no rule reads: it never reaches the engine (nor an OPA
    sidecar's decision log), and the same question from two officers is one decision."""
    cached = RegorusEngine(PolicyBundle.load(ROOT / "policies"))
    first = build_input(query(officer="officer-1"), member("CA-CBSA"), member("US-CBP"), NOW)
    second = build_input(query(officer="officer-2"), member("CA-CBSA"), member("US-CBP"), NOW)
    assert "officer" not in first["query"] and "officer-1" not in json.dumps(first)
    assert cached.decide(first) == cached.decide(second)
    assert cached.cache_hits == 1


def test_the_case_reference_is_not_policy_input_only_whether_one_is_cited() -> None:
    """The case reference names an investigation, and no rule needs more than whether one is
    cited: the reference never reaches the engine, the flag decides, and the same question about
    two cases is one decision."""
    cached = RegorusEngine(PolicyBundle.load(ROOT / "policies"))
    provider, requester = member("CA-RCMP"), member("US-CBP")
    first = build_input(investigation(case_reference="CBP-OFO-2026-118"), provider, requester, NOW)
    second = build_input(investigation(case_reference="CBP-OFO-2026-907"), provider, requester, NOW)
    none = build_input(investigation(case_reference=None), provider, requester, NOW)
    assert "case_reference" not in first["query"] and "CBP-OFO" not in json.dumps(first)
    assert first["query"]["case_reference_cited"] is True
    assert none["query"]["case_reference_cited"] is False
    allowed = cached.decide(first)
    assert allowed.allow and cached.decide(second) == allowed
    assert cached.cache_hits == 1
    assert rules(cached.decide(none)) == ["case_reference.missing"]


def test_one_engine_per_thread(engine: RegorusEngine) -> None:
    inputs = [build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW)] * 20
    results: list[list[Decision]] = []

    def work() -> None:
        results.append(engine.decide_many(inputs))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert all(d.allow and d.agreement == SCREENING for batch in results for d in batch)


def test_a_thread_drops_its_own_engines_when_their_policy_engine_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A policy activation replaces the RegorusEngine on one request thread while the others
    hold regorus engines built from it. Dropped on any thread but its own, a regorus engine
    raises (pyo3: "unsendable, but is being dropped on another thread") and leaks: each
    activation leaked one engine per other thread. Here the last reference to each engine goes
    on the main thread, and the thread that decided must drop its own on its next decision."""
    import gc
    import queue
    import sys

    from ibex.policy_engine import _thread_engines

    raised: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(repr(u.exc_value)))
    bundle = PolicyBundle.load(ROOT / "policies")
    decision_input = build_input(query(), member("CA-CBSA"), member("US-CBP"), NOW)
    jobs: queue.Queue[RegorusEngine | None] = queue.Queue()
    held: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        while (current := jobs.get()) is not None:
            assert current.decide(decision_input).allow
            count = len(_thread_engines())
            del current  # from here on the main thread holds the only reference
            held.put(count)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for _ in range(3):
            policy = RegorusEngine(bundle, cache_size=0)
            jobs.put(policy)
            assert held.get(timeout=60) == 1  # its own engine only: the last one was dropped
            del policy
            gc.collect()
    finally:
        jobs.put(None)
        thread.join()  # a thread that ends drops what it still holds, on itself
    assert raised == []
