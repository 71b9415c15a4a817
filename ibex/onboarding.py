"""Policy compatibility at onboarding: a new partner's proposed agreements against the federation.

Three questions a legal officer asks before a partner joins, answered from the policy analysis
(:mod:`ibex.policy_analysis`), never by a second policy engine:

1. **Overlap** — for each proposed agreement, the existing agreements with the same provider or
   a shared recipient that cover the same purpose and kind of record, the fields both release
   and the fields only the proposal would (what the recipient would newly get, or what the
   provider already gives others).
2. **Never satisfiable** — the findings of ``policy_analysis.check`` about the proposed
   agreements (unknown purposes or fields, naming agencies that are not members, expired, …).
3. **Replay** — past queries from the audit log (metadata only) as if the new partner had been
   one more target: how many the candidate policy set would have allowed, per requester and
   purpose, and which fields it would have released. Only counts leave this module: no query
   id, officer, case reference or time — the replay is anonymised by aggregation.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from ibex.errors import BadInput
from ibex.messages import Member
from ibex.policy_analysis import DecisionInput, Finding, check
from ibex.policy_bundle import AGREEMENTS_DIR, PolicyBundle
from ibex.policy_engine import make_engine

#: Finding codes that mean a proposed clause can never allow a query.
NEVER_SATISFIABLE = frozenset(
    {
        "never-applies",
        "unknown-purpose",
        "unknown-legal-basis",
        "unknown-field",
        "agreement-expired",
        "provider-is-recipient",
        "schema-invalid",
        "duplicate-agreement",
        "bundle-invalid",
    }
)


@dataclass(frozen=True, slots=True)
class Overlap:
    proposed: str
    existing: str
    relation: str  # same provider and recipient | same provider | same recipient
    provider: str  # the existing agreement's provider
    recipients: tuple[str, ...]
    purpose: str
    subject_type: str
    shared_fields: tuple[str, ...]
    only_proposed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class ReplayGroup:
    requester: str
    purpose: str
    subject_type: str
    queries: int = 0
    allowed: int = 0
    denied: int = 0
    fields: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "requester": self.requester,
            "purpose": self.purpose,
            "subject_type": self.subject_type,
            "queries": self.queries,
            "allowed": self.allowed,
            "denied": self.denied,
            "fields": sorted(self.fields),
        }


@dataclass(frozen=True, slots=True)
class CompatReport:
    partner: str
    proposed: tuple[str, ...]
    overlaps: tuple[Overlap, ...]
    never_satisfiable: tuple[Finding, ...]
    other_findings: tuple[Finding, ...]
    replay: tuple[ReplayGroup, ...]
    replayed: int
    unsupported_schema: int

    def to_json(self) -> dict[str, Any]:
        return {
            "partner": self.partner,
            "proposed": list(self.proposed),
            "overlaps": [o.to_json() for o in self.overlaps],
            "never_satisfiable": [_finding(f) for f in self.never_satisfiable],
            "other_findings": [_finding(f) for f in self.other_findings],
            "replay": {
                "replayed": self.replayed,
                "unsupported_schema": self.unsupported_schema,
                "groups": [g.to_json() for g in self.replay],
            },
        }

    def to_text(self) -> str:
        lines = [f"policy compatibility of {self.partner}: {', '.join(self.proposed)}"]
        lines.append(f"overlaps with existing agreements: {len(self.overlaps)}")
        for o in self.overlaps:
            lines.append(
                f"  {o.proposed} ~ {o.existing} ({o.relation}): {o.purpose}/{o.subject_type} "
                f"shared fields {', '.join(o.shared_fields) or '-'}"
                + (
                    f"; only in the proposal: {', '.join(o.only_proposed)}"
                    if o.only_proposed
                    else ""
                )
            )
        lines.append(f"clauses that can never be satisfied: {len(self.never_satisfiable)}")
        lines.extend(f"  [{f.code}] {_sentence(f)}" for f in self.never_satisfiable)
        if self.other_findings:
            lines.append(f"other findings: {len(self.other_findings)}")
            lines.extend(f"  {f.severity} [{f.code}] {_sentence(f)}" for f in self.other_findings)
        lines.append(
            f"past queries replayed with {self.partner} as a target: {self.replayed} "
            f"({self.unsupported_schema} for record kinds it does not serve)"
        )
        for g in self.replay:
            lines.append(
                f"  {g.requester} {g.purpose}/{g.subject_type}: {g.allowed} of {g.queries} "
                f"allowed; fields {', '.join(sorted(g.fields)) or '-'}"
            )
        return "\n".join(lines)


def _sentence(f: Finding) -> str:
    return f.message


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "severity": f.severity,
        "code": f.code,
        "agreement": f.agreement,
        "message": f.message,
        "clause": f.clause,
    }


def load_proposed(paths: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    """Proposed agreement files (YAML), or directories of them, by path."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    if not files:
        raise BadInput("no proposed agreement files given")
    out: dict[Path, dict[str, Any]] = {}
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise BadInput(f"cannot read proposed agreement {f}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise BadInput(f"{f} is not an agreement (a mapping with an id)")
        out[f] = doc
    return out


def compatibility(
    current: Path,
    proposed: Sequence[Path],
    *,
    partner: Mapping[str, Any],
    members: Sequence[Member] = (),
    history: Iterable[DecisionInput] = (),
    today: str | None = None,
) -> CompatReport:
    """Check ``proposed`` agreements (files or directories) for the new ``partner`` (its facts:
    ``id``, ``country``, ``agency_kind``, ``jurisdictions``, ``schemas``) against the policies in
    ``current``, the federation's ``members`` and the decision ``history``."""
    docs = load_proposed(proposed)
    ids = tuple(sorted(d["id"] for d in docs.values()))
    partner_member = _as_member(partner)
    with tempfile.TemporaryDirectory(prefix="ibex-onboarding-") as tmp:
        candidate_dir = Path(tmp) / "policies"
        shutil.copytree(current, candidate_dir)
        for path in docs:
            shutil.copy(path, candidate_dir / AGREEMENTS_DIR / path.name)
        # Without the federation's members, "not a member" cannot be judged: do not guess.
        known = [*members, partner_member] if members else None
        findings = check(candidate_dir, today=today, members=known)
        mine = [f for f in findings if _about(f, ids)]
        never = tuple(f for f in mine if f.code in NEVER_SATISFIABLE)
        other = tuple(f for f in mine if f.code not in NEVER_SATISFIABLE)
        existing = PolicyBundle.load(current).agreements
        overlaps = tuple(o for d in docs.values() for o in _overlaps(d, existing))
        try:
            candidate = PolicyBundle.load(candidate_dir)
        except BadInput:
            candidate = None  # the findings already say why it does not load
        replay, replayed, unsupported = (
            _replay(candidate, history, partner) if candidate else ((), 0, 0)
        )
    return CompatReport(
        partner=str(partner["id"]),
        proposed=ids,
        overlaps=overlaps,
        never_satisfiable=never,
        other_findings=other,
        replay=replay,
        replayed=replayed,
        unsupported_schema=unsupported,
    )


def _about(f: Finding, ids: tuple[str, ...]) -> bool:
    # Pair findings (overlap, contradiction) name the second agreement only in their sentence.
    return f.agreement in ids or any(aid in f.message for aid in ids)


def _as_member(partner: Mapping[str, Any]) -> Member:
    return Member(
        id=str(partner["id"]),
        name=str(partner.get("name", partner["id"])),
        country=str(partner["country"]),
        agency_kind=str(partner.get("agency_kind", "other")),
        jurisdictions=tuple(partner.get("jurisdictions") or (partner["country"],)),
        endpoint="https://example.invalid",
        status="active",
        keys=(),
        schemas={k: tuple(v) for k, v in (partner.get("schemas") or {}).items()},
    )


def _scope(doc: Mapping[str, Any]) -> dict[tuple[str, str], set[str]]:
    purposes = set(doc.get("purposes") or ())
    subjects = set(doc.get("subject_types") or ())
    out: dict[tuple[str, str], set[str]] = {}
    for purpose, per in (doc.get("fields") or {}).items():
        if purpose not in purposes or not isinstance(per, Mapping):
            continue
        for entity, fields in per.items():
            if entity in subjects:
                out[(purpose, entity)] = set(fields or ())
    return out


def _overlaps(doc: Mapping[str, Any], existing: Mapping[str, Mapping[str, Any]]) -> list[Overlap]:
    out: list[Overlap] = []
    mine = _scope(doc)
    for eid, other in sorted(existing.items()):
        if eid == doc["id"]:
            continue
        same_provider = other.get("provider") == doc.get("provider")
        recipients = sorted(set(other.get("recipients") or ()) & set(doc.get("recipients") or ()))
        if not same_provider and not recipients:
            continue
        relation = (
            "same provider and recipient"
            if same_provider and recipients
            else "same provider"
            if same_provider
            else "same recipient"
        )
        theirs = _scope(other)
        for key in sorted(set(mine) & set(theirs)):
            out.append(
                Overlap(
                    proposed=str(doc["id"]),
                    existing=eid,
                    relation=relation,
                    provider=str(other.get("provider")),
                    recipients=tuple(recipients),
                    purpose=key[0],
                    subject_type=key[1],
                    shared_fields=tuple(sorted(mine[key] & theirs[key])),
                    only_proposed=tuple(sorted(mine[key] - theirs[key])),
                )
            )
    return out


def _replay(
    candidate: PolicyBundle, history: Iterable[DecisionInput], partner: Mapping[str, Any]
) -> tuple[tuple[ReplayGroup, ...], int, int]:
    engine = make_engine(SimpleNamespace(policy_engine="regorus"), bundle=candidate)
    facts = {
        "id": partner["id"],
        "country": partner["country"],
        "agency_kind": partner.get("agency_kind", "other"),
        "jurisdictions": list(partner.get("jurisdictions") or [partner["country"]]),
        "status": "active",
    }
    served: Mapping[str, Sequence[str]] = partner.get("schemas") or {}
    groups: dict[tuple[str, str, str], ReplayGroup] = {}
    seen: set[str] = set()
    replayed = unsupported = 0
    for item in history:
        if item.query_id in seen or item.requester == partner["id"]:
            continue  # one replay per query, however many targets it had
        seen.add(item.query_id)
        query = dict(item.input["query"])
        subject = str(query.get("subject_type"))
        if str(query.get("schema_version")) not in served.get(subject, ()):
            unsupported += 1
            continue
        decision = engine.decide({**item.input, "target": facts["id"], "provider": facts})
        replayed += 1
        key = (item.requester, item.purpose, subject)
        group = groups.setdefault(key, ReplayGroup(*key))
        group.queries += 1
        if decision.allow:
            group.allowed += 1
            group.fields |= set(decision.fields)
        else:
            group.denied += 1
    return tuple(g for _, g in sorted(groups.items())), replayed, unsupported
