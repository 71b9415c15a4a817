"""What a legal officer asks of a policy set, answered in sentences and stable codes.

- :func:`check` — static findings about a policies directory (``Finding``): what the loader
  refuses, agreements that can never apply, that allow too much, that overlap or contradict.
- :func:`explain` — the decision for each target of a query, every reason with its rule id,
  sentence and citation, and the agreement clause that applied (``Explanation``).
- :func:`history_from_audit` and :func:`simulate` — replay the decisions recorded in the audit
  log under a candidate bundle and report what would change, by partner and purpose
  (``ImpactReport``).
- :func:`diff` — what a new policy set allows or forbids that the old one did not (``Change``).

The work lives in three private modules (one per question); this module is the stable API the
command line (``ibex policy …``) and the broker's console use.
"""

from __future__ import annotations

from ibex._policy_check import INVESTIGATIVE_PURPOSES, LONG_RETENTION_DAYS, Finding, check
from ibex._policy_diff import Change, diff
from ibex._policy_replay import (
    DecisionChange,
    DecisionInput,
    Explanation,
    History,
    ImpactGroup,
    ImpactReport,
    Members,
    Outcome,
    explain,
    history_from_audit,
    member_facts,
    normalise_query,
    simulate,
)

FINDING_CODES: dict[str, str] = {
    "agreement-expired": "The agreement's last day has passed: it allows nothing any more.",
    "not-yet-valid": "The agreement starts in the future: until then it allows nothing.",
    "unknown-purpose": "The agreement names a purpose that is not in the taxonomy.",
    "unknown-legal-basis": "The agreement names a legal basis that is not in the taxonomy.",
    "provider-is-recipient": "The providing agency is also listed as a recipient.",
    "unknown-field": "The agreement names a field the shared schema does not define.",
    "never-applies": "Some part of the agreement can never allow a query.",
    "all-fields": "Every field of a kind of record is released for a purpose.",
    "all-purposes": "The agreement covers every purpose in the taxonomy.",
    "no-case-reference-investigative": "An investigative purpose without a case reference.",
    "no-retention": "The agreement does not say how long recipients may keep data.",
    "long-retention": "Recipients may keep data for more than five years.",
    "retention-invalid": "The retention period is outside 1 to 3650 days.",
    "overlap": "Two agreements cover the same disclosure on the same terms.",
    "contradiction": "Two agreements cover the same disclosure on different terms.",
    "duplicate-agreement": "Two files define the same agreement id.",
    "schema-invalid": "The file does not follow the agreement schema.",
    "bundle-invalid": "A Rego module or the taxonomy cannot be loaded.",
}

__all__ = [
    "FINDING_CODES",
    "INVESTIGATIVE_PURPOSES",
    "LONG_RETENTION_DAYS",
    "Change",
    "DecisionChange",
    "DecisionInput",
    "Explanation",
    "Finding",
    "History",
    "ImpactGroup",
    "ImpactReport",
    "Members",
    "Outcome",
    "check",
    "diff",
    "explain",
    "history_from_audit",
    "member_facts",
    "normalise_query",
    "simulate",
]
