# Mode: hit/no-hit (whether a matching record exists, with a reference) or full (the allowed
# fields). An agreement in hit_no_hit mode gives full data only on a follow-up that cites the
# reference of an earlier hit, and only where the agreement allows follow-ups and the follow-up
# carries what the agreement requires: a case reference, an offence seriousness, the officer's
# confirmation that the hit is the subject of the case. A first query asking for full data under
# such an agreement is answered hit/no-hit (downgraded, not denied); a follow-up that does not
# meet the conditions is denied.
package ibex.mode

import data.ibex.conditions
import data.ibex.context.candidates
import data.ibex.context.confirmed
import data.ibex.context.follow_up
import data.ibex.context.q
import data.ibex.context.stated

effective(a) := "hit_no_hit" if q.mode == "hit_no_hit"

effective(a) := "full" if {
	q.mode == "full"
	a.mode == "full"
}

effective(a) := "full" if {
	q.mode == "full"
	a.mode == "hit_no_hit"
	follow_up
}

effective(a) := "hit_no_hit" if {
	q.mode == "full"
	a.mode == "hit_no_hit"
	not follow_up
}

# Follow-ups to agreements in hit_no_hit mode, with the agreement's follow-up terms.
_follow_ups[id] := a.follow_up_terms if {
	follow_up
	some id, a in candidates
	a.mode == "hit_no_hit"
}

violations contains [id, "follow_up.not_allowed"] if {
	some id, terms in _follow_ups
	not terms.allowed == true
}

violations contains [id, "follow_up.unconfirmed"] if {
	some id, terms in _follow_ups
	terms.allowed == true
	not _confirmation_ok(terms.officer_confirmation)
}

_confirmation_ok(required) if required == false

_confirmation_ok(_) if confirmed

violations contains [id, "case_reference.missing"] if {
	some id, terms in _follow_ups
	terms.allowed == true
	not conditions.case_reference_ok(terms.case_reference)
}

violations contains [id, "seriousness.missing"] if {
	some id, terms in _follow_ups
	terms.allowed == true
	not _seriousness_ok(terms.seriousness)
}

_seriousness_ok(required) if required == false

_seriousness_ok(_) if stated >= 1
