"""``check``: static findings about a policies directory, in sentences for a legal officer.

Two kinds of finding. What the bundle loader refuses (schema errors, unknown purposes or legal
bases, unknown fields, a provider among its own recipients, validity that ends before it starts,
Rego that does not compile) becomes an ``error`` naming the file and the JSON pointer; the
loader stops at the first bad file, so each bad file is set aside in a scratch copy and the rest
loaded again, to report every bad file at once. What the loader accepts is then read as a legal
officer would: agreements that can never apply, that allow too much, or that overlap or
contradict one another.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ibex.errors import ConfigError, SchemaValidationError
from ibex.messages import Member
from ibex.policy_bundle import AGREEMENTS_DIR, PolicyBundle
from ibex.schemas import registry

# Purposes under which a query concerns a specific offence: an agreement covering one should
# ask for the recipient's case reference, so that every disclosure can be tied to a case.
INVESTIGATIVE_PURPOSES = frozenset({"criminal_investigation", "counter_terrorism"})
# Beyond five years a retention period deserves a second look (the schema allows ten).
LONG_RETENTION_DAYS = 1825
# Fields that describe the record rather than the subject (provenance, handling).
_RECORD_FIELDS = frozenset({"record"})
_MAX_BAD_FILES = 50
_FILE_RE = re.compile(r"policy files? (\S+)")


@dataclass(frozen=True, slots=True)
class Finding:
    """One static finding. ``code`` is stable (kebab case); ``message`` is one sentence."""

    severity: str  # "error" | "warning" | "info"
    code: str
    agreement: str | None
    message: str
    clause: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "agreement": self.agreement,
            "message": self.message,
            "clause": self.clause,
        }


def check(
    policies_dir: Path,
    *,
    today: str | None = None,
    members: Sequence[Member] | None = None,
) -> list[Finding]:
    """Every finding about ``policies_dir``: errors first, then warnings, then information.

    ``today`` (YYYY-MM-DD, default: the UTC date) decides what is expired; with ``members`` (the
    federation's members) agreements naming agencies that are not members are reported too."""
    day = today or datetime.now(UTC).date().isoformat()
    findings, bundle = _load_all(Path(policies_dir))
    if bundle is not None:
        docs = dict(bundle.agreements)
        for doc in docs.values():
            findings.extend(_agreement_findings(doc, bundle.taxonomy, day, members))
        findings.extend(_pair_findings(docs, bundle.taxonomy, day))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (order[f.severity], f.agreement or "", f.code))


# --- what the loader refuses -------------------------------------------------------------------


def _load_all(root: Path) -> tuple[list[Finding], PolicyBundle | None]:
    try:
        return [], PolicyBundle.load(root)
    except (SchemaValidationError, ConfigError) as exc:
        refusal = exc
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="ibex-check-") as tmp:
        scratch = Path(tmp) / "policies"
        for _ in range(_MAX_BAD_FILES):
            found, bad = _refusal(refusal, root)
            findings.extend(found)
            if bad is None or not (root / bad).is_file():
                return findings, None
            if not scratch.exists():
                shutil.copytree(root, scratch)
            (scratch / bad).unlink(missing_ok=True)
            try:
                # The other agreements load: analyse them too, so that one bad file does not
                # hide the findings about the rest.
                return findings, PolicyBundle.load(scratch)
            except (SchemaValidationError, ConfigError) as exc:
                refusal = exc
    return findings, None


def _refusal(
    exc: SchemaValidationError | ConfigError, root: Path
) -> tuple[list[Finding], str | None]:
    """The findings of one refusal, and the agreement file it is about (None: another file)."""
    match = _FILE_RE.search(exc.detail)
    rel = match.group(1).rstrip(":") if match else None
    bad = rel if rel is not None and rel.startswith(AGREEMENTS_DIR + "/") else None
    aid = _agreement_id(root / bad) if bad else None
    if not exc.errors:
        code = "duplicate-agreement" if "both define" in exc.detail else "bundle-invalid"
        return [Finding("error", code, aid, _sentence(exc.detail), rel)], bad
    found = [
        Finding(
            "error",
            _code(e.pointer, e.message),
            aid,
            _sentence(f"{rel or 'The policies'}: at {e.pointer or 'the top'}: {e.message}"),
            f"{rel}#{e.pointer}" if rel else e.pointer,
        )
        for e in exc.errors
    ]
    return found, bad


def _agreement_id(path: Path) -> str | None:
    """The id a refused agreement file gives itself, when it can be read at all."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


def _code(pointer: str, message: str) -> str:
    if "cannot be its own recipient" in message:
        return "provider-is-recipient"
    if pointer.startswith("/purposes/") and "taxonomy" in message:
        return "unknown-purpose"
    if pointer.startswith("/legal_bases/") and "taxonomy" in message:
        return "unknown-legal-basis"
    if "is not a field of" in message:
        return "unknown-field"
    if "retention_days" in message or pointer.startswith("/retention_days"):
        return "no-retention" if "required" in message else "retention-invalid"
    if "before valid_from" in message:
        return "never-applies"
    return "schema-invalid"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


# --- one agreement -----------------------------------------------------------------------------


def _agreement_findings(
    doc: Mapping[str, Any],
    taxonomy: Mapping[str, Any],
    today: str,
    members: Sequence[Member] | None,
) -> list[Finding]:
    aid = doc["id"]
    out: list[Finding] = []

    def add(severity: str, code: str, message: str, clause: str) -> None:
        out.append(Finding(severity, code, aid, message, clause))

    if doc["valid_until"] < today:
        add(
            "warning",
            "agreement-expired",
            f"Agreement {aid} expired on {doc['valid_until']} and cannot apply to any query.",
            "valid_until",
        )
    elif doc["valid_from"] > today:
        add(
            "info",
            "not-yet-valid",
            f"Agreement {aid} applies only from {doc['valid_from']}; until then it allows nothing.",
            "valid_from",
        )
    purposes = list(doc["purposes"])
    all_purposes = set(taxonomy["purposes"])
    if len(all_purposes) > 1 and all_purposes <= set(purposes):
        add(
            "warning",
            "all-purposes",
            f"Agreement {aid} covers every purpose in the taxonomy; an agreement should name "
            "only the purposes its legal bases and the partners' needs justify.",
            "purposes",
        )
    bases = {lb["id"] for lb in doc["legal_bases"]}
    for purpose in purposes:
        label = taxonomy["purposes"][purpose]["label"]
        if not any(purpose in taxonomy["legal_bases"][b]["purposes"] for b in bases):
            add(
                "warning",
                "never-applies",
                f"Agreement {aid} lists {label}, but none of its legal bases permits that "
                "purpose, so no query for it can be allowed.",
                f"purposes.{purpose}",
            )
        if not doc["fields"].get(purpose):
            add(
                "warning",
                "never-applies",
                f"Agreement {aid} lists {label} but no fields for it, so it covers no records "
                "for that purpose.",
                f"fields.{purpose}",
            )
    covered = {entity for per in doc["fields"].values() for entity in per}
    for entity in doc["subject_types"]:
        if entity not in covered:
            add(
                "warning",
                "never-applies",
                f"Agreement {aid} lists {entity} records but no fields for them under any "
                "purpose, so it never covers them.",
                f"subject_types.{entity}",
            )
    reg = registry()
    for purpose, per in doc["fields"].items():
        for entity, listed in per.items():
            every = set(reg.fields(entity)) - _RECORD_FIELDS
            if entity not in doc["subject_types"] or not every or not every <= set(listed):
                continue
            notes = reg.annotations(entity)
            high = sorted(f for f in every if notes[f].sensitivity == "high")
            extra = f", including the highly sensitive {' and '.join(high)}" if high else ""
            add(
                "warning" if high else "info",
                "all-fields",
                f"Agreement {aid} releases every field of {entity} records for "
                f"{taxonomy['purposes'][purpose]['label']}{extra}; list only the fields the "
                "purpose needs.",
                f"fields.{purpose}.{entity}",
            )
    investigative = sorted(INVESTIGATIVE_PURPOSES & set(purposes))
    if investigative and doc.get("requires_case_reference", True) is False:
        labels = " and ".join(taxonomy["purposes"][p]["label"] for p in investigative)
        add(
            "warning",
            "no-case-reference-investigative",
            f"Agreement {aid} covers {labels} but does not require a case reference, so "
            "disclosures cannot be tied to an open case.",
            "requires_case_reference",
        )
    if doc["retention_days"] > LONG_RETENTION_DAYS:
        add(
            "warning",
            "long-retention",
            f"Agreement {aid} lets recipients keep data for {doc['retention_days']} days, more "
            f"than {LONG_RETENTION_DAYS // 365} years.",
            "retention_days",
        )
    if members is not None:
        out.extend(_member_findings(doc, members))
    return out


def _member_findings(doc: Mapping[str, Any], members: Sequence[Member]) -> list[Finding]:
    aid = doc["id"]
    known = {m.id: m for m in members}
    out: list[Finding] = []
    for role, ids in (("provider", [doc["provider"]]), ("recipients", doc["recipients"])):
        for member in ids:
            if member not in known:
                out.append(
                    Finding(
                        "warning",
                        "never-applies",
                        aid,
                        f"Agreement {aid} names {member}, which is not a member of the "
                        "federation, so it cannot apply to that agency.",
                        role,
                    )
                )
    return out


# --- pairs of agreements -----------------------------------------------------------------------


def _scope(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    subjects = set(doc["subject_types"])
    return {
        (purpose, entity)
        for purpose, per in doc["fields"].items()
        if purpose in doc["purposes"]
        for entity in per
        if entity in subjects
    }


def _pair_findings(
    docs: Mapping[str, Mapping[str, Any]], taxonomy: Mapping[str, Any], today: str
) -> list[Finding]:
    live = sorted(aid for aid, d in docs.items() if d["valid_until"] >= today)
    out: list[Finding] = []
    for i, a_id in enumerate(live):
        for b_id in live[i + 1 :]:
            a, b = docs[a_id], docs[b_id]
            if a["provider"] != b["provider"]:
                continue
            recipients = sorted(set(a["recipients"]) & set(b["recipients"]))
            shared = sorted(_scope(a) & _scope(b))
            if not recipients or not shared:
                continue
            if a["valid_from"] > b["valid_until"] or b["valid_from"] > a["valid_until"]:
                continue
            out.append(_pair_finding(a, b, recipients, shared, taxonomy))
    return out


def _pair_finding(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    recipients: list[str],
    shared: list[tuple[str, str]],
    taxonomy: Mapping[str, Any],
) -> Finding:
    label = taxonomy["purposes"]
    scope = "; ".join(f"{entity} records for {label[p]['label']}" for p, entity in shared)
    differ: list[str] = []
    if a["mode"] != b["mode"]:
        differ.append("mode")
    if any(
        set(a["fields"][p][e]) != set(b["fields"][p][e]) for p, e in shared
    ):  # same (purpose, subject), other fields
        differ.append("fields")
    if a["handling"] != b["handling"]:
        differ.append("handling")
    if a["retention_days"] != b["retention_days"]:
        differ.append("retention")
    if bool(a.get("follow_up", {}).get("allowed")) != bool(b.get("follow_up", {}).get("allowed")):
        differ.append("follow-up")
    where = (
        f"Agreements {a['id']} and {b['id']} both let {a['provider']} disclose to "
        f"{' and '.join(recipients)} ({scope})"
    )
    clause = "fields.{}.{}".format(*shared[0])
    if not differ:
        return Finding(
            "info",
            "overlap",
            a["id"],
            f"{where} on the same terms; one of them is redundant.",
            clause,
        )
    return Finding(
        "warning",
        "contradiction",
        a["id"],
        f"{where} but differ in {', '.join(differ)}; {_winner(a, b, taxonomy)}",
        clause,
    )


def _winner(a: Mapping[str, Any], b: Mapping[str, Any], taxonomy: Mapping[str, Any]) -> str:
    """Which agreement decides, by the engine's documented precedence (docs/POLICY.md §3.5):
    full before hit/no-hit; more requested fields; stricter handling; shorter retention; id."""
    if a["mode"] != b["mode"]:
        full = a if a["mode"] == "full" else b
        return f"the engine applies {full['id']} to first queries because it answers in full."
    strict = {code: v["strictness"] for code, v in taxonomy["handling"].items()}
    tail = "when both release the requested fields, the engine applies "
    if strict.get(a["handling"], 0) != strict.get(b["handling"], 0):
        win = max((a, b), key=lambda d: strict.get(d["handling"], 0))
        tail += f"{win['id']} (stricter handling code {win['handling']})"
    elif a["retention_days"] != b["retention_days"]:
        win = min((a, b), key=lambda d: int(d["retention_days"]))
        tail += f"{win['id']} (shorter retention, {win['retention_days']} days)"
    else:
        win = min((a, b), key=lambda d: str(d["id"]))
        tail += f"{win['id']} (the lower id)"
    return "the engine applies whichever releases more of the requested fields, and " + tail + "."
