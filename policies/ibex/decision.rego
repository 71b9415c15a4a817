# The entry point: data.ibex.decision answers, for one (query, target) pair, whether the target
# may disclose, in which mode, which fields, under which agreement, and why.
#
# Deny is the default. The query itself is checked first (query.rego: input shape, provider
# status, purpose and legal basis against the taxonomy, the requester's jurisdictions, field
# names); then every agreement the target (the provider) has with the requester is checked on
# its own (agreement.rego); an agreement with no finding allows the query. The decision is always
# covered entirely by ONE agreement: fields are never combined across agreements. When several
# agreements allow the query the one chosen is the one that answers more of the request (full
# before hit/no-hit, then more of the requested fields); among equals the more protective one
# (stricter handling code, then shorter retention); then the lowest id.
#
# The allow is looked for first and only among the agreements that cover the query's purpose
# and subject type (an index the loader precomputes; any other agreement has a finding); the
# findings of every agreement are worked out only for a deny, which lists them all: the query's
# first, then each agreement's.
package ibex

import data.ibex.agreement
import data.ibex.context
import data.ibex.query

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
	c := context.values
	count(query_reasons) == 0
	id := chosen[0]
	o := chosen[1]
	a := c.d.agreements[id]
	d := {
		"allow": true,
		"mode": o.mode,
		"fields": sort(o.fields),
		"withheld": sort(o.withheld),
		"handling": a.handling,
		"retention_days": a.retention_days,
		"agreement": id,
		"reasons": agreement.allow_reasons(a, o, c),
	}
} else := d if {
	c := context.values
	found := array.concat(query_reasons, [r |
		some id in query.candidates(c)
		some r in agreement.reasons(c.d.agreements[id], c)
	])
	d := {
		"allow": false,
		"mode": "none",
		"fields": [],
		"withheld": sort(object.keys(c.requested)),
		"handling": null,
		"retention_days": null,
		"agreement": null,
		"reasons": _or_default(found),
	}
}

# The findings about the query (a rule: worked out once per decision, then cached).
query_reasons := query.reasons(context.values)

_or_default(found) := found if {
	count(found) > 0
} else := [_default_reason]

_default_reason := {"rule": "default.deny", "text": data.ibex_data.say["default.deny"][0], "citation": "", "clause": ""}

# The agreements that cover the purpose and subject type and have no finding, each with what it
# gives: [id, {mode, fields, withheld}].
allowing := [[id, o] |
	some id in by_subject[c.subject]
	a := agreements[id]
	count(agreement.reasons(a, c)) == 0
	o := agreement.outcome(a, c)
] if {
	c := context.values
	agreements := c.d.agreements
	pair := c.d.pairs[input.target]
	by_purpose := pair[input.requester.id].cover
	by_subject := by_purpose[c.purpose]
}

chosen := allowing[0] if count(allowing) == 1

# Several agreements allow: the smallest key wins. The keys are fixed-width strings rather than
# arrays because not every Rego implementation orders arrays (rego-cpp 1.5 leaves
# [0, -2] < [0, -1] undefined); strings order the same everywhere. a.choice is
# "<9 - handling strictness>|<retention, 5 digits>|<id>" (precomputed by the loader).
chosen := by_key[min(object.keys(by_key))] if {
	count(allowing) > 1
	c := context.values
	by_key := {k: allows |
		some allows in allowing
		o := allows[1]
		k := sprintf("%d|%03d|%s", [_mode_rank[o.mode], 999 - count(o.fields), c.d.agreements[allows[0]].choice])
	}
}

_mode_rank := {"full": 0, "hit_no_hit": 1}
