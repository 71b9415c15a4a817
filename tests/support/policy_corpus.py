"""Decision inputs for differential tests: every shipped agreement times representative queries.

For each agreement and each of its recipients the corpus holds one query the agreement allows
and variants that each break one condition (purpose, legal basis, jurisdiction, criteria, case
reference, seriousness, dates, mode, follow-up, unknown field, suspended provider, inconsistent
input), plus pairs of members that have no agreement. Built from the bundle itself, so a new
agreement is covered without editing this file.
"""

from __future__ import annotations

import copy
import random
import shutil
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import build_input

MEMBERS: dict[str, dict[str, Any]] = {
    "CA-CBSA": {"id": "CA-CBSA", "country": "CA", "agency_kind": "border", "jurisdictions": ["CA"]},
    "CA-RCMP": {"id": "CA-RCMP", "country": "CA", "agency_kind": "police", "jurisdictions": ["CA"]},
    "US-CBP": {"id": "US-CBP", "country": "US", "agency_kind": "customs", "jurisdictions": ["US"]},
    "US-USCG": {
        "id": "US-USCG",
        "country": "US",
        "agency_kind": "coast_guard",
        "jurisdictions": ["US"],
    },
    "MX-INM": {
        "id": "MX-INM",
        "country": "MX",
        "agency_kind": "immigration",
        "jurisdictions": ["MX"],
    },
}
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
ROOT = Path(__file__).resolve().parents[2]


def member(member_id: str, status: str = "active") -> dict[str, Any]:
    return {**MEMBERS[member_id], "status": status}


def _midday(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp() + 43200


def base_query(agreement: Mapping[str, Any], recipient: str) -> tuple[dict[str, Any], float]:
    """A query the agreement allows, and a time at which it is valid."""
    purpose = agreement["purposes"][0]
    subject = next(iter(agreement["allowed"][purpose]))
    requester_jurisdictions = MEMBERS[recipient]["jurisdictions"]
    jurisdiction = next(
        (j for j in agreement["jurisdictions"] if j.split("-")[0] in requester_jurisdictions),
        agreement["jurisdictions"][0],
    )
    allowed = sorted(agreement["allowed"][purpose][subject])
    query: dict[str, Any] = {
        "requester": recipient,
        "purpose": purpose,
        "legal_basis": agreement["legal_bases"][0]["id"],
        "jurisdiction": jurisdiction,
        "subject_type": subject,
        "schema_version": "1.0",
        "mode": "full",
        "criteria_fields": sorted(agreement["criteria"][subject][0]),
        "requested_fields": allowed[:3],
        "case_reference": "CASE-2026-0001",
        "seriousness": "very_serious",
    }
    valid_from, valid_until = agreement["valid_from"], agreement["valid_until"]
    now = NOW if valid_from <= "2026-11-28" <= valid_until else _midday(valid_from)
    return query, now


def corpus(bundle: PolicyBundle) -> list[tuple[str, dict[str, Any]]]:
    """(label, decision input) pairs, labels unique."""
    out: list[tuple[str, dict[str, Any]]] = []
    taxonomy = bundle.taxonomy
    for agreement_id, agreement in sorted(bundle.data["ibex_data"]["agreements"].items()):
        provider = agreement["provider"]
        for recipient in agreement["recipients"]:
            if recipient not in MEMBERS or provider not in MEMBERS:
                continue
            query, now = base_query(agreement, recipient)
            follow = {"follow_up": {"officer_confirmed": True}, "criteria_fields": ["reference"]}
            other = sorted(set(taxonomy["purposes"]) - set(agreement["purposes"]))
            expired = _midday(agreement["valid_until"]) + 86400
            early = _midday(agreement["valid_from"]) - 86400
            # (name, changes to the query, keys to drop, time, provider status)
            variants: list[tuple[str, dict[str, Any], tuple[str, ...], float, str]] = [
                ("allowed", {}, (), now, "active"),
                ("hit-no-hit", {"mode": "hit_no_hit", "requested_fields": []}, (), now, "active"),
                ("all-fields", {"requested_fields": []}, (), now, "active"),
                ("purpose-not-covered", {"purpose": other[0]}, (), now, "active"),
                ("purpose-unknown", {"purpose": "tourism"}, (), now, "active"),
                ("legal-basis-unknown", {"legal_basis": "no_such_law"}, (), now, "active"),
                ("jurisdiction-elsewhere", {"jurisdiction": "FR"}, (), now, "active"),
                (
                    "criteria-insufficient",
                    {"criteria_fields": [query["criteria_fields"][0] + ".x"]},
                    (),
                    now,
                    "active",
                ),
                ("no-case-reference", {}, ("case_reference",), now, "active"),
                ("seriousness-none", {"seriousness": "none"}, (), now, "active"),
                ("unknown-field", {"requested_fields": ["no_such_field"]}, (), now, "active"),
                ("suspended", {}, (), now, "suspended"),
                ("expired", {}, (), expired, "active"),
                ("not-yet-valid", {}, (), early, "active"),
                ("follow-up", follow, (), now, "active"),
                (
                    "follow-up-unconfirmed",
                    {**follow, "follow_up": {"officer_confirmed": False}},
                    (),
                    now,
                    "active",
                ),
                ("follow-up-no-case", follow, ("case_reference",), now, "active"),
                ("follow-up-no-seriousness", follow, ("seriousness",), now, "active"),
            ]
            for name, changes, drop, at, status in variants:
                changed = {**copy.deepcopy(query), **changes}
                for key in drop:
                    changed.pop(key, None)
                inp = build_input(changed, member(provider, status), member(recipient), at)
                out.append((f"{agreement_id}/{recipient}/{name}", inp))
            inconsistent = build_input(query, member(provider), member(recipient), now)
            inconsistent["requester"] = dict(MEMBERS[provider])
            out.append((f"{agreement_id}/{recipient}/inconsistent", inconsistent))
    for requester, target in (("CA-RCMP", "MX-INM"), ("US-USCG", "MX-INM"), ("MX-INM", "US-USCG")):
        query = {
            "requester": requester,
            "purpose": "border_screening",
            "legal_basis": "ca_customs_act_s107",
            "jurisdiction": MEMBERS[requester]["jurisdictions"][0],
            "subject_type": "person",
            "schema_version": "1.0",
            "mode": "full",
            "criteria_fields": ["date_of_birth", "name"],
            "requested_fields": ["name"],
        }
        inp = build_input(query, member(target), member(requester), NOW)
        out.append((f"{requester}->{target}/no-agreement", inp))
    return out


def synthetic_policies(target: Path, count: int, *, source: Path | None = None) -> Path:
    """A copy of the policies directory ``source`` (default: the shipped ``policies/``) under
    ``target``, plus ``count`` agreements between 60 synthetic members (variations of the
    shipped agreements, valid 2026-2028). Deterministic: the same files every time."""
    source = source or ROOT / "policies"
    shutil.copytree(source, target)
    shipped = [
        yaml.safe_load(p.read_text()) for p in sorted((source / "agreements").glob("*.yaml"))
    ]
    rng = random.Random(7)
    members = synthetic_members()
    for n in range(count):
        base = dict(rng.choice(shipped))
        provider, recipient = rng.sample(members, 2)
        base.update(
            id=f"SYN-{n:04d}",
            provider=provider,
            recipients=[recipient],
            valid_from="2026-01-01",
            valid_until="2028-12-31",
        )
        (target / "agreements" / f"SYN-{n:04d}.yaml").write_text(yaml.safe_dump(base))
    return target


def synthetic_members() -> list[str]:
    """The ids of the 60 synthetic members of :func:`synthetic_policies`."""
    return [f"Z{chr(65 + i // 26)}-AGENCY{i:02d}" for i in range(60)]
