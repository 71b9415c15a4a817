# Every sentence a decision can give, in one place so that legal officers can review the wording.
# Each reason has a stable rule id, one plain-language sentence, the legal citation it rests on
# and, for a finding about an agreement, the clause (agreement id and key) it is about.
#
# A reason is kept internally as an array
#     [agreement id ("" for the query itself), rank, rule id, sentence, citation, clause]
# because arrays of strings and numbers sort the same way in every Rego implementation, so the
# order of reasons is identical across engines. decision.rego turns each into
# {rule, text, citation, clause}; "" means none.
package ibex.reasons

import data.ibex.context.jurisdiction
import data.ibex.context.purpose
import data.ibex.context.purpose_label
import data.ibex.context.q
import data.ibex.context.seriousness
import data.ibex.context.subject
import data.ibex.context.taxonomy
import data.ibex.lib

# The order in which reasons are listed (what is wrong with the input or the query first, then
# each agreement's findings in the order a legal officer would check them) and the key of the
# agreement each finding is about.
rules := {
	"input.invalid": {"rank": 0, "key": ""},
	"provider.inactive": {"rank": 1, "key": ""},
	"purpose.unknown": {"rank": 2, "key": ""},
	"legal_basis.unknown": {"rank": 3, "key": ""},
	"legal_basis.not_for_purpose": {"rank": 4, "key": ""},
	"jurisdiction.not_requester": {"rank": 5, "key": ""},
	"fields.unknown": {"rank": 6, "key": ""},
	"agreement.none": {"rank": 7, "key": ""},
	"agreement.not_yet_valid": {"rank": 10, "key": "valid_from"},
	"agreement.expired": {"rank": 11, "key": "valid_until"},
	"purpose.not_covered": {"rank": 12, "key": "purposes"},
	"legal_basis.not_covered": {"rank": 13, "key": "legal_bases"},
	"subject_type.not_covered": {"rank": 14, "key": "fields"},
	"jurisdiction.outside": {"rank": 15, "key": "jurisdictions"},
	"criteria.insufficient": {"rank": 16, "key": "minimum_criteria"},
	"case_reference.missing": {"rank": 17, "key": "requires_case_reference"},
	"seriousness.missing": {"rank": 18, "key": "follow_up"},
	"seriousness.too_low": {"rank": 19, "key": "minimum_seriousness"},
	"follow_up.not_allowed": {"rank": 20, "key": "follow_up"},
	"follow_up.unconfirmed": {"rank": 21, "key": "follow_up"},
	"handling.unknown": {"rank": 22, "key": "handling"},
	"allow.agreement": {"rank": 30, "key": "legal_bases"},
	"follow_up.full": {"rank": 31, "key": "follow_up"},
	"mode.downgraded": {"rank": 32, "key": "mode"},
	"fields.withheld": {"rank": 33, "key": "fields"},
	"handling.applied": {"rank": 34, "key": "handling"},
	"default.deny": {"rank": 98, "key": ""},
}

# --- findings about the query --------------------------------------------------------------

query_text("input.invalid") := "The decision input is incomplete or inconsistent (the query, requester, target, provider or time is missing or does not match), so nothing can be disclosed."

query_text("provider.inactive") := concat("", [input.target, " is not an active member of the federation, so it cannot be asked."])

query_text("purpose.unknown") := concat("", ["The purpose ", purpose, " is not in the federation's taxonomy of purposes, so no agreement can cover it."])

query_text("legal_basis.unknown") := concat("", ["The legal basis ", q.legal_basis, " is not in the federation's taxonomy of legal bases."])

query_text("legal_basis.not_for_purpose") := concat("", [taxonomy.legal_bases[q.legal_basis].citation, " does not permit disclosure for ", purpose_label, "."])

query_text("jurisdiction.not_requester") := concat("", [input.requester.id, " does not act in ", jurisdiction, " according to the federation document, so it cannot ask on behalf of that jurisdiction."])

query_text("fields.unknown") := concat("", ["The query names fields that the shared ", subject, " schema does not define (", lib.names(lib.sorted(data.ibex.minimisation.unknown)), "), so it is refused as malformed."])

query_text("agreement.none") := concat("", [input.target, " has no disclosure agreement with ", input.requester.id, ", so nothing can be disclosed."])

query_text("default.deny") := "No agreement allows this query, so it is denied by default."

query_citation("legal_basis.not_for_purpose") := taxonomy.legal_bases[q.legal_basis].citation

query_citation(rule) := "" if rule != "legal_basis.not_for_purpose"

query_reason(rule) := ["", rules[rule].rank, rule, query_text(rule), query_citation(rule), ""]

# --- findings about an agreement -----------------------------------------------------------

text(a, "agreement.expired") := concat("", ["Agreement ", a.id, " expired on ", a.valid_until, " and no longer allows any disclosure."])

text(a, "agreement.not_yet_valid") := concat("", ["Agreement ", a.id, " applies only from ", a.valid_from, "."])

text(a, "purpose.not_covered") := concat("", ["Agreement ", a.id, " does not cover the purpose ", purpose_label, "."])

text(a, "legal_basis.not_covered") := concat("", ["Agreement ", a.id, " does not rest on the legal basis ", q.legal_basis, " that the query invokes."])

text(a, "subject_type.not_covered") := concat("", ["Agreement ", a.id, " does not cover ", subject, " records for ", purpose_label, "."])

text(a, "jurisdiction.outside") := concat("", ["Agreement ", a.id, " does not allow the data to be used in ", jurisdiction, "; it covers ", lib.names(a.jurisdictions), "."])

text(a, "criteria.insufficient") := concat("", ["The query does not identify the ", subject, " precisely enough for agreement ", a.id, ", which needs at least ", concat("; or ", [lib.names(s) | some s in a.criteria[subject]]), "."])

text(a, "case_reference.missing") := concat("", ["Agreement ", a.id, " requires the recipient's case reference and the query has none."])

text(a, "seriousness.too_low") := concat("", ["Agreement ", a.id, " requires an offence of at least ", a.minimum_seriousness, " seriousness and the query states ", seriousness, "."])

text(a, "seriousness.missing") := concat("", ["Agreement ", a.id, " requires a follow-up to state the seriousness of the offence under investigation, and this one does not."])

text(a, "follow_up.not_allowed") := concat("", ["Agreement ", a.id, " allows only hit/no-hit answers and no follow-up request for full data."])

text(a, "follow_up.unconfirmed") := concat("", ["Agreement ", a.id, " releases full data on a follow-up only after the officer confirms that the hit is the subject of the case, and this follow-up is not confirmed."])

text(a, "handling.unknown") := concat("", ["Agreement ", a.id, " names the handling code ", a.handling, ", which the federation does not define, so it cannot be applied."])

text(a, "allow.agreement") := concat("", ["Allowed under agreement ", a.id, " (", a.title, "): ", input.target, " may disclose ", subject, " records to ", input.requester.id, " for ", purpose_label, "."])

text(a, "follow_up.full") := concat("", ["Full data is released on this follow-up to a hit because agreement ", a.id, " allows it and its conditions are met."])

text(a, "mode.downgraded") := concat("", ["Only whether a matching record exists (hit/no-hit) is disclosed, because agreement ", a.id, " releases full data only on a follow-up to a hit."]) if {
	a.follow_up_terms.allowed == true
}

text(a, "mode.downgraded") := concat("", ["Only whether a matching record exists (hit/no-hit) is disclosed, because agreement ", a.id, " allows hit/no-hit answers only."]) if {
	not a.follow_up_terms.allowed == true
}

text(a, "handling.applied") := concat("", ["Disclosed data carries handling code ", a.handling, " (", taxonomy.handling[a.handling].description, ") and may be kept for at most ", format_int(a.retention_days, 10), " days."])

# The withheld-fields sentence depends on why they are withheld.
withheld_text(a, "full", withheld) := concat("", [_fields_are(withheld), " withheld because agreement ", a.id, " does not allow ", _them(withheld), " for ", purpose_label, "."])

withheld_text(a, "hit_no_hit", withheld) := concat("", [_fields_are(withheld), " withheld because a hit/no-hit answer discloses only whether a matching record exists."])

_them(fields) := "it" if count(fields) == 1

_them(fields) := "them" if count(fields) > 1

_fields_are(fields) := concat("", ["The field ", lib.names(lib.sorted(fields)), " is"]) if count(fields) == 1

_fields_are(fields) := concat("", ["The fields ", lib.names(lib.sorted(fields)), " are"]) if count(fields) > 1

# Every rule id above has a sentence; a finding whose sentence could not be built is still a
# finding (the agreement still fails), and a denial with no reason left says default.deny.
reason(a, rule, sentence) := [a.id, rules[rule].rank, rule, sentence, _citation(a), concat(": ", [a.id, rules[rule].key])]

agreement_reason(a, rule) := reason(a, rule, text(a, rule))

# The legal basis the query invoked when the agreement recognises it, otherwise the agreement's
# first (both precomputed by the loader).
_citation(a) := a.citation_by_basis[q.legal_basis]

_citation(a) := a.citation if not a.citation_by_basis[q.legal_basis]
