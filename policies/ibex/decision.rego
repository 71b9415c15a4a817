# The entry point: data.ibex.decision answers, for one (query, target) pair, whether the target
# may disclose, in which mode, which fields, under which agreement, and why.
#
# Deny is the default. The query itself is checked first (input shape, provider status, purpose
# and legal basis against the taxonomy, the requester's jurisdictions, field names); then every
# agreement the target (the provider) has with the requester is checked on its own. Each module
# reports a violation as [agreement id, rule id]; an agreement with no violation allows the
# query. The decision is always covered entirely by ONE agreement: fields are never combined
# across agreements. When several agreements allow the query the one chosen is the one that
# answers more of the request (full before hit/no-hit, then more of the requested fields);
# among equals the more protective one (stricter handling code, then shorter retention); then
# the lowest id. reasons.rego holds every sentence.
package ibex

import data.ibex.context.candidates
import data.ibex.context.jurisdiction
import data.ibex.context.purpose
import data.ibex.context.q
import data.ibex.context.requested
import data.ibex.context.subject
import data.ibex.reasons

# --- findings about the query as a whole ---------------------------------------------------

query_violations := (((_input_violations | data.ibex.purpose.query_violations) | data.ibex.jurisdiction.query_violations) | data.ibex.minimisation.query_violations)

_input_violations contains "input.invalid" if not _well_formed

_input_violations contains "provider.inactive" if {
	_well_formed
	input.provider.status != "active"
}

# The input has every member the policy reads, with the right types, and its parts agree.
_well_formed if {
	is_string(input.now)
	count(input.now) >= 10
	input.provider.id == input.target
	q.requester == input.requester.id
	input.requester.id != input.target
	is_string(input.provider.status)
	is_string(purpose)
	is_string(q.legal_basis)
	is_string(jurisdiction)
	is_string(subject)
	is_array(q.criteria_fields)
	is_array(q.requested_fields)
	is_boolean(q.follow_up)
	is_boolean(q.officer_confirmed)
	is_array(input.requester.jurisdictions)
}

# --- findings about each candidate agreement -----------------------------------------------

agreement_violations := ((((((data.ibex.validity.violations | data.ibex.purpose.violations) | data.ibex.jurisdiction.violations) | data.ibex.minimisation.violations) | data.ibex.criteria.violations) | data.ibex.conditions.violations) | data.ibex.mode.violations) | data.ibex.handling.violations

_failed := {v[0] | some v in agreement_violations}

# What each agreement without violations gives: the effective mode and the fields released.
outcomes[id] := {"mode": m, "fields": released} if {
	some id, a in candidates
	not _failed[id]
	m := data.ibex.mode.effective(a)
	released := data.ibex.minimisation.released(a, m)
}

_mode_rank := {"full": 0, "hit_no_hit": 1}

# Keys implementing the choice described at the top of this file: the smallest key wins. They
# are fixed-width strings rather than arrays because not every Rego implementation orders
# arrays (rego-cpp 1.5 leaves [0, -2] < [0, -1] undefined); strings order the same everywhere.
_choice_keys := {k |
	some id
	o := outcomes[id]
	a := candidates[id]
	k := sprintf("%d|%03d|%d|%05d|%s", [_mode_rank[o.mode], 999 - count(o.fields), 9 - data.ibex.handling.strictness(a), a.retention_days, id])
}

chosen := split(min(_choice_keys), "|")[4]

allowed if {
	count(query_violations) == 0
	chosen
}

# --- the decision --------------------------------------------------------------------------

# Reasons in a fixed order: the query's own findings first, then each agreement's by rank. The
# order key is a string for the same portability reason as the choice keys, built with concat:
# rego-cpp 1.5's sprintf("%s") quotes a string that concat produced, and the sentences are.
_render(found) := [keyed[k] | some k in sort(object.keys(keyed))] if {
	keyed := {key: reason |
		some r in found
		key := concat("|", [_group(r[0]), r[0], format_int(r[1] + 100, 10), r[2], r[3], r[4]])
		reason := {"rule": r[2], "text": r[3], "citation": r[4], "clause": r[5]}
	}
}

_group("") := "0"

_group(id) := "1" if id != ""

_allow_reasons(a, o, withheld) := (({
	reasons.agreement_reason(a, "allow.agreement"),
	reasons.agreement_reason(a, "handling.applied"),
} | {reasons.agreement_reason(a, "mode.downgraded") | o.mode == "hit_no_hit"; q.mode == "full"}) | {reasons.agreement_reason(a, "follow_up.full") | o.mode == "full"; a.mode == "hit_no_hit"}) | {reasons.reason(a, "fields.withheld", reasons.withheld_text(a, o.mode, withheld)) | count(withheld) > 0}

_deny_reasons := (({reasons.query_reason(r) | some r in query_violations} | {reasons.agreement_reason(candidates[v[0]], v[1]) | some v in agreement_violations}) | {reasons.query_reason("agreement.none") | count(candidates) == 0}) | {reasons.query_reason("default.deny") | count(query_violations) + count(agreement_violations) == 0; count(candidates) > 0}

default decision := {
	"allow": false,
	"mode": "none",
	"fields": [],
	"withheld": [],
	"handling": null,
	"retention_days": null,
	"agreement": null,
	"reasons": [{"rule": "default.deny", "text": "No agreement allows this query, so it is denied by default.", "citation": "", "clause": ""}],
}

decision := d if {
	allowed
	a := candidates[chosen]
	o := outcomes[chosen]
	withheld := data.ibex.minimisation.withheld(o.fields)
	d := {
		"allow": true,
		"mode": o.mode,
		"fields": sort(o.fields),
		"withheld": sort(withheld),
		"handling": a.handling,
		"retention_days": a.retention_days,
		"agreement": chosen,
		"reasons": _render(_allow_reasons(a, o, withheld)),
	}
}

decision := d if {
	not allowed
	found := _deny_reasons
	shown := found | {reasons.query_reason("default.deny") | count(found) == 0}
	d := {
		"allow": false,
		"mode": "none",
		"fields": [],
		"withheld": sort(object.keys(requested)),
		"handling": null,
		"retention_days": null,
		"agreement": null,
		"reasons": _render(shown),
	}
}
