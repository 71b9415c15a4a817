# Minimum criteria, case reference and seriousness.
package ibex_test.conditions

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.rules

investigation := {
	"purpose": "criminal_investigation",
	"legal_basis": "ca_privacy_act_s8_2_f",
	"case_reference_cited": true,
	"seriousness": "serious",
}

test_name_alone_is_fishing if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"criteria_fields": ["name.surname"]}))
	d.allow == false
	rules(d) == {"criteria.insufficient"}
	some r in d.reasons
	r.text == "The query does not identify the person precisely enough for agreement CA-CBSA--US-CBP--screening-2026, which needs at least name and date_of_birth; or identifiers."
}

test_agreement_own_criteria_allow_a_document_number_alone if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"criteria_fields": ["identifiers.value"]}))
	d.allow == true
	d.agreement == "CA-CBSA--US-CBP--screening-2026"
}

test_taxonomy_default_criteria_apply_when_the_agreement_lists_none if {
	d := decide(input_for("CA-CBSA", "US-CBP", {"jurisdiction": "CA", "legal_basis": "us_19_usc_1628", "criteria_fields": ["identifiers"]}))
	d.allow == false
	some r in d.reasons
	r.rule == "criteria.insufficient"
	r.text == "The query does not identify the person precisely enough for agreement US-CBP--CA-CBSA--screening-2026, which needs at least name and date_of_birth; or name and identifiers."
}

test_case_reference_missing if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(investigation, {"case_reference_cited": false})))
	d.allow == false
	rules(d) == {"case_reference.missing"}
	d.reasons[0].clause == "CA-RCMP--US-CBP--investigations-2026: requires_case_reference"
}

# The policy sees whether a case is cited, never which one (build_input): the reference itself
# where the flag belongs is a malformed input, refused, not read as "cited".
test_a_case_reference_instead_of_the_flag_is_malformed if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(investigation, {"case_reference_cited": "CBP-OFO-2026-118"})))
	d.allow == false
	d.reasons[0].rule == "input.invalid"
	"case_reference.missing" in rules(d)
}

test_a_case_reference_alongside_the_flag_is_not_read if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(investigation, {"case_reference_cited": false, "case_reference": "CBP-OFO-2026-118"})))
	rules(d) == {"case_reference.missing"}
}

test_seriousness_too_low if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(investigation, {"seriousness": "minor"})))
	d.allow == false
	rules(d) == {"seriousness.too_low"}
	d.reasons[0].text == "Agreement CA-RCMP--US-CBP--investigations-2026 requires an offence of at least serious seriousness and the query states minor."
}

test_absent_seriousness_counts_as_none if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.remove(investigation, ["seriousness"])))
	rules(d) == {"seriousness.too_low"}
}

test_unknown_seriousness_never_meets_a_minimum if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(investigation, {"seriousness": "grave"})))
	rules(d) == {"seriousness.too_low"}
}

test_conditions_met_gives_hit_no_hit if {
	d := decide(input_for("US-CBP", "CA-RCMP", investigation))
	d.allow == true
	d.mode == "hit_no_hit"
}
