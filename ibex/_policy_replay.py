"""``explain`` and ``simulate``: decisions in full, and what a candidate policy would change.

``explain`` runs the engine on a query for each target and keeps everything a court would ask:
every reason (rule id, sentence, citation), the agreement clause that applied and its title.

``simulate`` replays the decision inputs recorded in the broker's audit log (metadata only: the
``intake`` entry of each query and the ``decision`` entry of each target) under a candidate
bundle, at the time each was first decided, and compares. Nothing here sees a criteria value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ibex.auditlog import AuditLog
from ibex.errors import BadInput
from ibex.jsonio import loads_strict
from ibex.messages import Decision, FederationDocument, Member
from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import PolicyEngine, build_input, make_engine
from ibex.timeutil import now as clock
from ibex.timeutil import parse_ts

MemberFacts = Mapping[str, Any]
Members = FederationDocument | Sequence[Member] | Sequence[MemberFacts] | None
# The federation document a broker published as a version, if it kept it.
Documents = Callable[[int], FederationDocument | None]
MAX_EXAMPLES = 5
_PAGE = 1000
# Rules the broker decides before the policy is asked: replaying them says nothing of a policy.
_NOT_POLICY = frozenset({"schema.unsupported"})


def _engine(bundle: PolicyBundle) -> PolicyEngine:
    return make_engine(SimpleNamespace(policy_engine="regorus"), bundle=bundle)


def member_facts(members: Members, member_id: str) -> tuple[MemberFacts, bool]:
    """The facts the policy reads about a member, and whether they were assumed: without a
    federation document, country = the id's first two letters, jurisdictions = [country],
    agency kind "other", status active."""
    listed: Iterable[Member | MemberFacts] = (
        members.members if isinstance(members, FederationDocument) else members or ()
    )
    for m in listed:
        if isinstance(m, Member) and m.id == member_id:
            return {
                "id": m.id,
                "country": m.country,
                "agency_kind": m.agency_kind,
                "jurisdictions": list(m.jurisdictions),
                "status": m.status,
            }, False
        if isinstance(m, Mapping) and m.get("id") == member_id:
            return dict(m), False
    country = member_id[:2]
    facts = {
        "id": member_id,
        "country": country,
        "agency_kind": "other",
        "jurisdictions": [country],
        "status": "active",
    }
    return facts, True


# --- explain -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision for one target, with what a legal officer needs to defend it."""

    target: str
    decision: Decision
    agreement_clause: str | None
    agreement_title: str | None
    citations: tuple[str, ...]
    members_assumed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "decision": self.decision.to_json(),
            "agreement_clause": self.agreement_clause,
            "agreement_title": self.agreement_title,
            "citations": list(self.citations),
            "members_assumed": self.members_assumed,
        }


def normalise_query(query: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A Query JSON or a gateway-style plain request (with ``requester``) as the metadata the
    policy reads, and its targets. Criteria values of a plain request are dropped here."""
    q = dict(query)
    if "criteria" in q:  # a plain gateway request
        criteria = q.pop("criteria")
        q["criteria_fields"] = sorted(criteria) if isinstance(criteria, Mapping) else []
        q.setdefault("mode", "hit_no_hit")
        follow = q.get("follow_up")
        if isinstance(follow, Mapping):
            q["criteria_fields"] = ["reference"]
            q["mode"] = "full"
            q["targets"] = [follow.get("target")]
    q.setdefault("schema_version", "1.0")
    if not isinstance(q.get("requester"), str):
        raise BadInput('the query must name its requester (add "requester": "US-CBP")')
    targets = [t.get("member") if isinstance(t, Mapping) else t for t in q.get("targets") or []]
    if not targets or not all(isinstance(t, str) for t in targets):
        raise BadInput('the query must name its targets ("targets": ["CA-CBSA"])')
    return q, [str(t) for t in targets]


def explain(
    policies: Path | PolicyBundle,
    query: Mapping[str, Any],
    members: Members = None,
    now: float | None = None,
) -> list[Explanation]:
    """The decision of each target of ``query`` under ``policies``, with its reasons."""
    bundle = policies if isinstance(policies, PolicyBundle) else PolicyBundle.load(policies)
    engine = _engine(bundle)
    q, targets = normalise_query(query)
    at = clock() if now is None else now
    requester, assumed = member_facts(members, q["requester"])
    out: list[Explanation] = []
    for target in targets:
        provider, assumed_target = member_facts(members, target)
        d = engine.decide(build_input(q, provider, requester, at))
        clause: str | None = None
        title: str | None = None
        if d.agreement is not None:
            doc = bundle.agreements[d.agreement]
            title = str(doc["title"])
            clause = f"{d.agreement}: fields.{q.get('purpose')}.{q.get('subject_type')}"
        else:
            clause = next((r.clause for r in d.reasons if r.clause), None)
            aid = clause.split(":", 1)[0] if clause else None
            if aid is not None and aid in bundle.agreements:
                title = str(bundle.agreements[aid]["title"])
        citations = tuple(dict.fromkeys(r.citation for r in d.reasons if r.citation))
        out.append(Explanation(target, d, clause, title, citations, assumed or assumed_target))
    return out


# --- simulate ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision released, in the terms a replay compares."""

    allow: bool
    mode: str
    fields: tuple[str, ...]
    agreement: str | None

    @classmethod
    def of(cls, d: Decision | Mapping[str, Any]) -> Outcome:
        if isinstance(d, Decision):
            return cls(d.allow, d.mode, tuple(sorted(d.fields)), d.agreement)
        return cls(
            bool(d.get("allow")),
            str(d.get("mode", "none")),
            tuple(sorted(d.get("fields") or ())),
            d.get("agreement"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "allow": self.allow,
            "mode": self.mode,
            "fields": list(self.fields),
            "agreement": self.agreement,
        }


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """One recorded (query, target) decision, rebuilt for replay (metadata only)."""

    query_id: str
    partner: str  # the target asked
    requester: str
    purpose: str
    at: float
    input: Mapping[str, Any]
    recorded: Outcome
    policy_digest: str | None = None


class History(list[DecisionInput]):
    """Decision inputs read from an audit log, with what could not be replayed, and how many
    were rebuilt with member facts other than those they were decided under
    (``current_facts``)."""

    def __init__(
        self,
        items: Iterable[DecisionInput] = (),
        *,
        purged: int = 0,
        skipped: int = 0,
        current_facts: int = 0,
    ):
        super().__init__(items)
        self.purged = purged
        self.skipped = skipped
        self.current_facts = current_facts


@dataclass(slots=True)
class ImpactGroup:
    """The changes for one partner (the target asked) and purpose."""

    partner: str
    purpose: str
    replayed: int = 0
    changed: int = 0
    newly_allowed: int = 0
    newly_denied: int = 0
    fields_added: int = 0
    fields_removed: int = 0
    mode_changed: int = 0
    agreement_changed: int = 0
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class DecisionChange:
    query_id: str
    partner: str
    requester: str
    purpose: str
    before: Outcome
    after: Outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "partner": self.partner,
            "requester": self.requester,
            "purpose": self.purpose,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        }


@dataclass(frozen=True, slots=True)
class ImpactReport:
    candidate_digest: str
    baseline: str  # "recorded" or the digest of the current bundle replayed beside it
    replayed: int
    changed: int
    purged: int
    skipped: int
    groups: tuple[ImpactGroup, ...]
    changes: tuple[DecisionChange, ...]
    # Replayed with the member facts given, not those of the federation version they were
    # decided under (not recorded, or not kept): against the recorded baseline, a change among
    # these may be the federation's rather than the policy's.
    current_facts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate_digest": self.candidate_digest,
            "baseline": self.baseline,
            "replayed": self.replayed,
            "changed": self.changed,
            "purged": self.purged,
            "skipped": self.skipped,
            "current_facts": self.current_facts,
            "groups": [g.to_json() for g in self.groups],
            "changes": [c.to_json() for c in self.changes],
        }


def simulate(
    history: Iterable[DecisionInput],
    candidate: PolicyBundle,
    current: PolicyBundle | None = None,
) -> ImpactReport:
    """Replay ``history`` under ``candidate``; compare with the recorded decisions, or — with
    ``current`` — with ``current`` replayed on the same inputs (so that only the policy change
    shows, not what changed in the federation since)."""
    new_engine = _engine(candidate)
    old_engine = _engine(current) if current is not None else None
    groups: dict[tuple[str, str], ImpactGroup] = {}
    changes: list[DecisionChange] = []
    replayed = 0
    items = list(history)
    for item in items:
        replayed += 1
        before = (
            Outcome.of(old_engine.decide(item.input)) if old_engine is not None else item.recorded
        )
        after = Outcome.of(new_engine.decide(item.input))
        group = groups.setdefault(
            (item.partner, item.purpose), ImpactGroup(item.partner, item.purpose)
        )
        group.replayed += 1
        if before == after:
            continue
        group.changed += 1
        group.newly_allowed += after.allow and not before.allow
        group.newly_denied += before.allow and not after.allow
        if before.allow and after.allow:
            group.fields_added += bool(set(after.fields) - set(before.fields))
            group.fields_removed += bool(set(before.fields) - set(after.fields))
            group.mode_changed += before.mode != after.mode
            group.agreement_changed += before.agreement != after.agreement
        if len(group.examples) < MAX_EXAMPLES and item.query_id not in group.examples:
            group.examples.append(item.query_id)
        changes.append(
            DecisionChange(item.query_id, item.partner, item.requester, item.purpose, before, after)
        )
    return ImpactReport(
        candidate_digest=candidate.digest,
        baseline="recorded" if current is None else current.digest,
        replayed=replayed,
        changed=len(changes),
        purged=getattr(history, "purged", 0),
        skipped=getattr(history, "skipped", 0),
        groups=tuple(g for _, g in sorted(groups.items()) if g.changed),
        changes=tuple(changes),
        current_facts=getattr(history, "current_facts", 0),
    )


def history_from_audit(
    audit_log: AuditLog,
    since: float | None = None,
    members: Members = None,
    documents: Documents | None = None,
) -> History:
    """Every policy decision recorded in ``audit_log`` (from ``since``, POSIX seconds) as a
    decision input. Purged entries (past retention) and decisions the policy did not make
    (unsupported schema version) are counted, not replayed.

    With ``documents`` (a broker's :meth:`~broker.members.MemberRegistry.document_at`), each
    decision is rebuilt with the member facts of the federation version its intake entry names,
    so that replaying under the same policy gives the recorded decision even after a member was
    suspended or moved. Any other decision (no version recorded, or the version not kept) is
    rebuilt with ``members`` and counted in ``History.current_facts``."""
    intakes: dict[str, Mapping[str, Any]] = {}
    items: list[DecisionInput] = []
    purged = skipped = current_facts = 0
    versions: dict[int, FederationDocument | None] = {}
    size = audit_log.size()
    for start in range(0, size, _PAGE):
        for stored in audit_log.entries(start, min(start + _PAGE, size)):
            if stored.purged or stored.leaf is None:
                purged += 1
                continue
            entry = loads_strict(stored.leaf, what=f"audit entry {stored.index}")
            if not isinstance(entry, dict) or entry.get("kind") not in ("intake", "decision"):
                continue
            at = parse_ts(entry["time"], what="audit entry time")
            if since is not None and at < since:
                continue
            if entry["kind"] == "intake":
                intakes[entry.get("query_id", "")] = entry
                continue
            decision = entry.get("decision") or {}
            intake = intakes.get(entry.get("query_id", ""))
            if intake is None or _NOT_POLICY & set(decision.get("rule_ids") or ()):
                skipped += 1
                continue
            facts = _facts_of(intake.get("federation_version"), documents, versions)
            current_facts += facts is None
            items.append(_decision_input(intake, entry, at, members if facts is None else facts))
    return History(items, purged=purged, skipped=skipped, current_facts=current_facts)


def _facts_of(
    version: object, documents: Documents | None, seen: dict[int, FederationDocument | None]
) -> FederationDocument | None:
    """The kept document of a recorded federation version, looked up once per version."""
    if documents is None or type(version) is not int:
        return None
    if version not in seen:
        seen[version] = documents(version)
    return seen[version]


def _decision_input(
    intake: Mapping[str, Any], entry: Mapping[str, Any], at: float, members: Members
) -> DecisionInput:
    query = dict(intake)
    if intake.get("follow_up"):
        query["follow_up"] = {"officer_confirmed": bool(intake.get("officer_confirmed"))}
    else:
        query.pop("follow_up", None)
    target = str(entry["target"])
    requester, _ = member_facts(members, str(intake["requester"]))
    provider, _ = member_facts(members, target)
    decision = entry.get("decision") or {}
    return DecisionInput(
        query_id=str(intake.get("query_id")),
        partner=target,
        requester=str(intake["requester"]),
        purpose=str(intake.get("purpose")),
        at=at,
        input=build_input(query, provider, requester, at),
        recorded=Outcome.of(decision),
        policy_digest=decision.get("policy_digest"),
    )
