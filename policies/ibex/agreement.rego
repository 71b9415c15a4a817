# Each candidate agreement on its own: what is wrong with the query under agreement a (its
# findings), and what a gives when nothing is. `c` is the query's facts (context.rego).
#
# reasons(a, c) lists a's findings, each {rule, text, citation, clause}, in the order a legal
# officer checks them; an agreement with no finding allows the query:
#
# - Validity: a applies from its valid_from day to its valid_until day inclusive, judged on the
#   UTC date of the decision time the broker supplies (input.now).
# - Purpose limitation: a covers the purpose and the legal basis the query invokes, and lists
#   fields for the subject type under that purpose.
# - Jurisdiction: a allows the data to be used where the query says; a country covers its
#   subdivisions (US covers US-WA), a subdivision does not cover its country.
# - Minimum criteria ("no fishing"): the query gives in full at least one of the alternative
#   sets of criteria fields listed for the subject type (a's own list, or else the taxonomy's
#   default; the loader resolves which). A criteria field inside a listed field gives it
#   (name.surname gives name). A follow-up cites the reference of an earlier hit, which is
#   precise by construction, so it is exempt.
# - Conditions on every query: the recipient's case reference (required unless a says
#   requires_case_reference: false) and a minimum offence seriousness (none, minor, serious,
#   very_serious; an absent seriousness counts as none).
# - Follow-ups under a hit/no-hit agreement: full data only where a allows follow-ups and the
#   follow-up carries what a requires: a case reference, a seriousness, the officer's
#   confirmation that the hit is the subject of the case.
# - Handling: a's handling code (SIENA H0-H3 or TLP 2.0) must be one the federation defines.
#
# Every check is written as "not <the condition that must hold>", so that anything missing fails
# closed. Sentences: SENTENCES in ibex/policy_bundle.py, precomputed per agreement (a.say).
package ibex.agreement

import data.ibex.lib

reasons(a, c) := [] if {
	_passes(a, c)
} else := [r | some part in [
	[_reason(a, "agreement.not_yet_valid", say["agreement.not_yet_valid"][0], cite) | not c.today >= a.valid_from],
	[_reason(a, "agreement.expired", say["agreement.expired"][0], cite) | not c.today <= a.valid_until],
	[_reason(a, "purpose.not_covered", concat("", [s[0], c.purpose_label, s[1]]), cite) |
		not a.purpose_set[c.purpose]
		s := say["purpose.not_covered"]
	],
	[_reason(a, "legal_basis.not_covered", concat("", [s[0], c.legal_basis, s[1]]), cite) |
		not a.citation_by_basis[c.legal_basis]
		s := say["legal_basis.not_covered"]
	],
	[_reason(a, "subject_type.not_covered", concat("", [s[0], c.subject, s[1], c.purpose_label, s[2]]), cite) |
		fields := a.allowed[c.purpose]
		not fields[c.subject]
		s := say["subject_type.not_covered"]
	],
	[_reason(a, "jurisdiction.outside", concat("", [s[0], c.jurisdiction, s[1]]), cite) |
		not lib.covers(a.jurisdiction_set, c.jurisdiction, c.country)
		s := say["jurisdiction.outside"]
	],
	[_reason(a, "criteria.insufficient", say["criteria.insufficient"][c.subject][0], cite) |
		not c.follow_up
		fields := a.allowed[c.purpose]
		fields[c.subject]
		not _identifies(a, c)
	],
	[_reason(a, "case_reference.missing", say["case_reference.missing"][0], cite) |
		not c.has_case_reference
		_needs_case_reference(a, follow_up_terms)
	],
	[_reason(a, "seriousness.missing", say["seriousness.missing"][0], cite) |
		some terms in follow_up_terms
		terms.seriousness == true
		not c.stated >= 1
	],
	[_reason(a, "seriousness.too_low", concat("", [s[0], c.seriousness, s[1]]), cite) |
		not c.stated >= a.seriousness_level
		s := say["seriousness.too_low"]
	],
	[_reason(a, "follow_up.not_allowed", say["follow_up.not_allowed"][0], cite) |
		c.follow_up
		a.mode == "hit_no_hit"
		not a.follow_up_terms.allowed == true
	],
	[_reason(a, "follow_up.unconfirmed", say["follow_up.unconfirmed"][0], cite) |
		some terms in follow_up_terms
		terms.officer_confirmation == true
		not c.confirmed
	],
	[_reason(a, "handling.unknown", concat("", [s[0], a.handling, s[1]]), cite) |
		not c.d.taxonomy.handling[a.handling]
		s := say["handling.unknown"]
	],
]; some r in part] if {
	say := a.say
	cite := citation(a, c)

	# The terms of a follow-up that a hit/no-hit agreement allows ([] for anything else).
	follow_up_terms := [a.follow_up_terms |
		c.follow_up
		a.mode == "hit_no_hit"
		a.follow_up_terms.allowed == true
	]
}

# A quick test that implies a has no finding, so that an agreement that allows costs a few
# lookups; when it fails the checks above say which failed (and may find none).
_passes(a, c) if {
	c.today >= a.valid_from
	c.today <= a.valid_until
	fields := a.allowed[c.purpose]
	fields[c.subject]
	a.citation_by_basis[c.legal_basis]
	some j in [c.jurisdiction, c.country]
	a.jurisdiction_set[j]
	c.has_case_reference
	c.stated >= a.seriousness_level
	_follow_up_and_criteria_ok(a, c)
	c.d.taxonomy.handling[a.handling]
}

# Not a follow-up: the criteria identify the subject. A follow-up under a full agreement is an
# ordinary query without criteria. A follow-up under a hit/no-hit agreement that allows
# follow-ups, confirmed and stating a seriousness, meets any terms (the case reference is
# tested above).
_follow_up_and_criteria_ok(a, c) if {
	not c.follow_up
	_identifies(a, c)
} else if {
	c.follow_up
	a.mode == "full"
} else if {
	c.follow_up
	a.follow_up_terms.allowed == true
	c.confirmed
	c.stated >= 1
}

_reason(a, rule, text, cite) := {"rule": rule, "text": text, "citation": cite, "clause": a.clause[rule]}

# The citation a finding quotes: a's citation for the legal basis the query invoked when a
# recognises it, otherwise a's first legal basis (both precomputed by the loader).
citation(a, c) := object.get(a.citation_by_basis, object.get(c, "legal_basis", ""), a.citation)

# The query gives in full at least one of a's alternative sets of criteria for the subject.
_identifies(a, c) if {
	some fields in a.criteria[c.subject]
	every f in fields {
		c.given[f]
	}
}

# A case reference is needed unless a says requires_case_reference: false, and on a follow-up
# under a hit/no-hit agreement whose follow-up terms ask for one.
_needs_case_reference(a, _) if not a.case_reference_required == false

_needs_case_reference(_, follow_up_terms) if {
	some terms in follow_up_terms
	terms.case_reference == true
}

# --- what an agreement gives -----------------------------------------------------------------

# The mode: hit/no-hit (whether a matching record exists, with a reference) or full (the
# allowed fields). A hit/no-hit agreement gives full data only on a follow-up that meets its
# terms (a follow-up that does not is a finding above); a first query asking for full data
# under it is answered hit/no-hit (downgraded, not denied). Undefined for any other mode.
effective(a, c) := "hit_no_hit" if {
	c.mode == "hit_no_hit"
} else := a.mode if {
	c.mode == "full"
	not c.follow_up
} else := "full" if {
	c.mode == "full"
}

# What agreement a gives in mode m: the fields released and those withheld. Requested fields a
# does not allow for the purpose and subject type are withheld, not a reason to deny. A query
# that requests no fields asks for every field a allows. A hit/no-hit answer releases no fields
# and withholds every requested one. A dotted field follows its top-level field.
outcome(a, c) := {"mode": m, "fields": released, "withheld": {f | some f; c.requested[f]; not released[f]}} if {
	m := effective(a, c)
	fields := a.allowed[c.purpose]
	allowed := fields[c.subject]
	released := _released(allowed, m, c)
}

_released(allowed, "hit_no_hit", c) := set()

_released(allowed, "full", c) := object.keys(allowed) if count(c.requested) == 0

_released(allowed, "full", c) := {f | some f; top := c.requested[f]; allowed[top]} if count(c.requested) > 0

# What an allow says: the agreement, the mode (full data on a follow-up, or a full request
# answered hit/no-hit), the fields withheld, the handling code and retention. The reasons that
# depend only on the agreement and the legal basis the query invokes are ready-made by the
# loader (a.ready[legal basis][rule]).
allow_reasons(a, o, c) := [r | some part in [
	[{"rule": "allow.agreement", "text": concat("", [s[0], c.target, s[1], c.subject, s[2], c.requester, s[3], c.purpose_label, s[4]]), "citation": ready["handling.applied"].citation, "clause": a.clause["allow.agreement"]} |
		s := a.say["allow.agreement"]
	],
	[ready["follow_up.full"] | o.mode == "full"; a.mode == "hit_no_hit"],
	[ready[_downgraded[a.follow_up_terms.allowed]] | o.mode == "hit_no_hit"; c.mode == "full"],
	[{"rule": "fields.withheld", "text": _withheld_text(a.say, o, c), "citation": ready["handling.applied"].citation, "clause": a.clause["fields.withheld"]} | count(o.withheld) > 0],
	[ready["handling.applied"]],
]; some r in part] if {
	ready := a.ready[c.legal_basis]
}

_downgraded := {true: "mode.downgraded/follow_up", false: "mode.downgraded/hit_no_hit_only"}

# The withheld-fields sentence depends on why they are withheld and on how many there are.
_withheld_text(say, o, c) := concat("", [s[0], lib.names(lib.sorted(o.withheld)), s[1], c.purpose_label, s[2]]) if {
	o.mode == "full"
	s := say[concat("/", ["fields.withheld/full", _how_many[count(o.withheld) == 1]])]
}

_withheld_text(say, o, _) := concat("", [s[0], lib.names(lib.sorted(o.withheld)), s[1]]) if {
	o.mode == "hit_no_hit"
	s := say[concat("/", ["fields.withheld/hit_no_hit", _how_many[count(o.withheld) == 1]])]
}

_how_many := {true: "one", false: "many"}
