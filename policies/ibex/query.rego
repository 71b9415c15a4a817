# Findings about the query as a whole, before any agreement is looked at: the input is complete
# and consistent; the target is an active member; the purpose and legal basis are in the
# federation's taxonomy and the legal basis permits the purpose; the requester acts in the
# jurisdiction the query names (a country covers its subdivisions: US covers US-WA); every
# requested and criteria field exists in the shared schema of the subject type (a follow-up's
# only criterion is the sealed reference of the earlier hit). And whether the target has any
# agreement with the requester at all.
#
# reasons(c) lists them in that order, each {rule, text, citation, clause}; an empty list means
# the query itself is fine. `c` is the query's facts (context.rego). Sentences: SENTENCES in
# ibex/policy_bundle.py, cut by the loader at each fact of the query (data.ibex_data.say).
package ibex.query

import data.ibex.lib

reasons(c) := [] if {
	_fine(c)
} else := [r | some part in [
	[_reason("input.invalid", say["input.invalid"][0], "") | not _well_formed],
	[_reason("provider.inactive", concat("", [s[0], input.target, s[1]]), "") |
		_well_formed
		input.provider.status != "active"
		s := say["provider.inactive"]
	],
	[_reason("purpose.unknown", concat("", [s[0], c.purpose, s[1]]), "") |
		not taxonomy.purposes[c.purpose]
		s := say["purpose.unknown"]
	],
	[_reason("legal_basis.unknown", concat("", [s[0], c.legal_basis, s[1]]), "") |
		not taxonomy.legal_bases[c.legal_basis]
		s := say["legal_basis.unknown"]
	],
	[_reason("legal_basis.not_for_purpose", concat("", [s[0], basis.citation, s[1], c.purpose_label, s[2]]), basis.citation) |
		basis := taxonomy.legal_bases[c.legal_basis]
		taxonomy.purposes[c.purpose]
		not basis.purpose_set[c.purpose]
		s := say["legal_basis.not_for_purpose"]
	],
	[_reason("jurisdiction.not_requester", concat("", [s[0], input.requester.id, s[1], c.jurisdiction, s[2]]), "") |
		not lib.covers({j: true | some j in input.requester.jurisdictions}, c.jurisdiction, c.country)
		s := say["jurisdiction.not_requester"]
	],
	[_reason("fields.unknown", concat("", [s[0], c.subject, s[1], lib.names(lib.sorted(unknown)), s[2]]), "") |
		unknown := unknown_fields(c)
		count(unknown) > 0
		s := say["fields.unknown"]
	],
	[_reason("agreement.none", concat("", [s[0], input.target, s[1], input.requester.id, s[2]]), "") |
		count(candidates(c)) == 0
		s := say["agreement.none"]
	],
]; some r in part] if {
	say := c.d.say
	taxonomy := c.d.taxonomy
}

# A quick test that implies every check above passes, so that the common case costs a few
# lookups; when it fails the checks above say which failed (and may find none).
_fine(c) if {
	is_string(input.now)
	count(input.now) >= 10
	input.provider.id == input.target
	input.query.requester == input.requester.id
	input.provider.status == "active"
	is_string(c.jurisdiction)
	is_array(input.query.criteria_fields)
	is_array(input.query.requested_fields)
	is_boolean(input.query.follow_up)
	is_boolean(input.query.officer_confirmed)
	is_boolean(input.query.case_reference_cited)
	is_array(input.requester.jurisdictions)

	# An agreement between the two: they are known members and not the same one.
	pair := c.d.pairs[input.target]
	pair[input.requester.id]

	# The legal basis permits the purpose: both are in the taxonomy.
	basis := c.d.taxonomy.legal_bases[c.legal_basis]
	basis.purpose_set[c.purpose]

	# The requester acts in the jurisdiction.
	some j in input.requester.jurisdictions
	j in [c.jurisdiction, c.country]

	# Every field is known.
	known := c.d.entities[c.subject]
	every f in input.query.requested_fields {
		known[f]
	}
	criteria_known := _criteria_known(known, c)
	every f in input.query.criteria_fields {
		criteria_known[f]
	}
}

# The field paths a criterion may name: those of the schema, and on a follow-up the reference.
_criteria_known(known, c) := object.union(known, {"reference": true}) if c.follow_up else := known

_reason(rule, text, citation) := {"rule": rule, "text": text, "citation": citation, "clause": ""}

# The agreements between this provider and this requester, in the order their findings are
# listed, from the index the loader precomputes: a decision touches a handful of agreements
# however many the federation has.
candidates(c) := ids if {
	pair := c.d.pairs[input.target]
	ids := pair[input.requester.id].ids
} else := []

# The input has every member the policy reads, with the right types, and its parts agree.
_well_formed if {
	is_string(input.now)
	count(input.now) >= 10
	input.provider.id == input.target
	input.query.requester == input.requester.id
	input.requester.id != input.target
	is_string(input.provider.status)
	is_string(input.query.purpose)
	is_string(input.query.legal_basis)
	is_string(input.query.jurisdiction)
	is_string(input.query.subject_type)
	is_array(input.query.criteria_fields)
	is_array(input.query.requested_fields)
	is_boolean(input.query.follow_up)
	is_boolean(input.query.officer_confirmed)
	is_boolean(input.query.case_reference_cited)
	is_array(input.requester.jurisdictions)
}

# Fields the query names that the shared schema of the subject type does not define: every
# field path of the subject type's schema is in data.ibex_data.entities ({path: true}). On a
# follow-up the only criterion is the sealed reference of the earlier hit.
unknown_fields(c) := {f | some f; c.requested[f]; not known[f]} | {f |
	some f in input.query.criteria_fields
	not known[f]
	not _reference_on_follow_up(f, c)
} if {
	known := object.get(c.d.entities, c.subject, {})
}

_reference_on_follow_up("reference", c) if c.follow_up
