"""``diff``: what a change of policy allows or forbids that it did not before, per agreement.

Each difference is one sentence saying "now allows" (broader), "no longer allows" (narrower) or
what changed (neutral, e.g. a title). Changes to the Rego modules or to the taxonomy are listed
too, because they can change decisions that no agreement mentions: ``simulate`` shows which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibex.policy_bundle import SERIOUSNESS_LEVELS, PolicyBundle, names


@dataclass(frozen=True, slots=True)
class Change:
    """One difference in agreement terms."""

    agreement: str | None  # None: the Rego modules or the taxonomy
    effect: str  # "broader" | "narrower" | "neutral"
    clause: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement,
            "effect": self.effect,
            "clause": self.clause,
            "message": self.message,
        }


def diff(old_dir: Path | PolicyBundle, new_dir: Path | PolicyBundle) -> list[Change]:
    old = old_dir if isinstance(old_dir, PolicyBundle) else PolicyBundle.load(old_dir)
    new = new_dir if isinstance(new_dir, PolicyBundle) else PolicyBundle.load(new_dir)
    out: list[Change] = []
    labels = {**old.taxonomy["purposes"], **new.taxonomy["purposes"]}

    def label(purpose: str) -> str:
        return str(labels.get(purpose, {}).get("label", purpose))

    for aid in sorted(set(old.agreements) | set(new.agreements)):
        a, b = old.agreements.get(aid), new.agreements.get(aid)
        if a is None and b is not None:
            out.append(
                Change(
                    aid,
                    "broader",
                    "",
                    f"New agreement {aid} now allows {b['provider']} to disclose to "
                    f"{names(list(b['recipients']))} for {names([label(p) for p in b['purposes']])}"
                    f", from {b['valid_from']} to {b['valid_until']}.",
                )
            )
        elif b is None and a is not None:
            out.append(
                Change(
                    aid,
                    "narrower",
                    "",
                    f"Agreement {aid} is removed: {a['provider']} no longer discloses to "
                    f"{names(list(a['recipients']))} under it.",
                )
            )
        elif a is not None and b is not None:
            out.extend(_agreement_changes(aid, a, b, label, new.taxonomy))
    for what, before, after in (
        ("Rego modules", dict(old.modules), dict(new.modules)),
        ("taxonomy", dict(old.taxonomy), dict(new.taxonomy)),
    ):
        if before != after:
            out.append(
                Change(
                    None,
                    "neutral",
                    what,
                    f"The {what} changed, which can change decisions under any agreement; "
                    "run ibex policy simulate to see which.",
                )
            )
    return out


def _agreement_changes(
    aid: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    label: Any,
    taxonomy: Mapping[str, Any],
) -> list[Change]:
    out: list[Change] = []

    def say(effect: str, clause: str, text: str) -> None:
        out.append(Change(aid, effect, clause, f"Agreement {aid} {text}."))

    def sets(key: str, noun: str, show: Any = str) -> None:
        added = sorted(set(b[key]) - set(a[key]))
        removed = sorted(set(a[key]) - set(b[key]))
        if added:
            say("broader", key, f"now allows {noun} {names([show(x) for x in added])}")
        if removed:
            say("narrower", key, f"no longer allows {noun} {names([show(x) for x in removed])}")

    sets("recipients", "disclosure to")
    sets("purposes", "queries for", label)
    sets("subject_types", "queries about records of type")
    sets("jurisdictions", "use of the data in")
    old_bases = {lb["id"]: lb["citation"] for lb in a["legal_bases"]}
    new_bases = {lb["id"]: lb["citation"] for lb in b["legal_bases"]}
    for basis in sorted(set(new_bases) - set(old_bases)):
        say("broader", "legal_bases", f"now accepts queries under {new_bases[basis]}")
    for basis in sorted(set(old_bases) - set(new_bases)):
        say("narrower", "legal_bases", f"no longer accepts queries under {old_bases[basis]}")
    for basis in sorted(set(old_bases) & set(new_bases)):
        if old_bases[basis] != new_bases[basis]:
            say("neutral", "legal_bases", f"now cites {new_bases[basis]} for {basis}")
    for purpose in sorted(set(a["fields"]) | set(b["fields"])):
        old_p, new_p = a["fields"].get(purpose, {}), b["fields"].get(purpose, {})
        for entity in sorted(set(old_p) | set(new_p)):
            before, after = set(old_p.get(entity, ())), set(new_p.get(entity, ()))
            where = f"of {entity} records for {label(purpose)}"
            clause = f"fields.{purpose}.{entity}"
            if after - before:
                say(
                    "broader",
                    clause,
                    f"now allows the fields {names(sorted(after - before))} {where}",
                )
            if before - after:
                say(
                    "narrower",
                    clause,
                    f"no longer allows the fields {names(sorted(before - after))} {where}",
                )
    out.extend(_term_changes(aid, a, b, taxonomy))
    return out


def _term_changes(
    aid: str, a: Mapping[str, Any], b: Mapping[str, Any], taxonomy: Mapping[str, Any]
) -> list[Change]:
    """Mode, follow-up, validity, handling, retention and conditions."""
    out: list[Change] = []

    def say(effect: str, clause: str, text: str) -> None:
        out.append(Change(aid, effect, clause, f"Agreement {aid} {text}."))

    if a["mode"] != b["mode"]:
        full = b["mode"] == "full"
        say(
            "broader" if full else "narrower",
            "mode",
            "now releases full data on a first query (it gave hit/no-hit only)"
            if full
            else "no longer releases full data on a first query: hit/no-hit only",
        )
    out.extend(_follow_up(aid, a.get("follow_up", {}), b.get("follow_up", {})))
    if a["valid_from"] != b["valid_from"]:
        earlier = b["valid_from"] < a["valid_from"]
        say(
            "broader" if earlier else "narrower",
            "valid_from",
            f"now applies from {b['valid_from']} (it applied from {a['valid_from']})"
            if earlier
            else f"no longer applies before {b['valid_from']} (it applied from {a['valid_from']})",
        )
    if a["valid_until"] != b["valid_until"]:
        later = b["valid_until"] > a["valid_until"]
        say(
            "broader" if later else "narrower",
            "valid_until",
            f"now applies until {b['valid_until']} (it ended on {a['valid_until']})"
            if later
            else f"no longer applies after {b['valid_until']} (it ran to {a['valid_until']})",
        )
    strict = {code: v["strictness"] for code, v in taxonomy["handling"].items()}
    if a["handling"] != b["handling"]:
        looser = strict.get(b["handling"], 0) < strict.get(a["handling"], 0)
        say(
            "broader" if looser else "narrower",
            "handling",
            f"now attaches handling code {b['handling']} (was {a['handling']})",
        )
    if a["retention_days"] != b["retention_days"]:
        longer = b["retention_days"] > a["retention_days"]
        say(
            "broader" if longer else "narrower",
            "retention_days",
            f"now allows recipients to keep data for {b['retention_days']} days (was "
            f"{a['retention_days']})"
            if longer
            else f"no longer allows recipients to keep data beyond {b['retention_days']} days "
            f"(was {a['retention_days']})",
        )
    case_a, case_b = a.get("requires_case_reference", True), b.get("requires_case_reference", True)
    if case_a != case_b:
        say(
            "narrower" if case_b else "broader",
            "requires_case_reference",
            "now requires a case reference"
            if case_b
            else "now allows queries without a case reference",
        )
    sa, sb = a.get("minimum_seriousness", "none"), b.get("minimum_seriousness", "none")
    if sa != sb:
        lower = SERIOUSNESS_LEVELS[sb] < SERIOUSNESS_LEVELS[sa]
        say(
            "broader" if lower else "narrower",
            "minimum_seriousness",
            f"now requires offences of at least {sb} seriousness (was {sa})",
        )
    if a.get("minimum_criteria") != b.get("minimum_criteria"):
        say("neutral", "minimum_criteria", "changes the minimum criteria a query must give")
    for key in ("provider", "title"):
        if a[key] != b[key]:
            say("neutral", key, f"changes its {key} from {a[key]} to {b[key]}")
    return out


def _follow_up(aid: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    out: list[Change] = []
    was, now_ = bool(a.get("allowed")), bool(b.get("allowed"))
    if was != now_:
        out.append(
            Change(
                aid,
                "broader" if now_ else "narrower",
                "follow_up",
                f"Agreement {aid} {'now allows' if now_ else 'no longer allows'} a follow-up "
                "request for full data after a hit.",
            )
        )
    if was and now_:
        added = sorted(set(b.get("requires", ())) - set(a.get("requires", ())))
        dropped = sorted(set(a.get("requires", ())) - set(b.get("requires", ())))
        if added:
            out.append(
                Change(
                    aid,
                    "narrower",
                    "follow_up.requires",
                    f"Agreement {aid} now requires {names(added)} on a follow-up.",
                )
            )
        if dropped:
            out.append(
                Change(
                    aid,
                    "broader",
                    "follow_up.requires",
                    f"Agreement {aid} no longer requires {names(dropped)} on a follow-up.",
                )
            )
    return out
