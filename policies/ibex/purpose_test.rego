# Purpose limitation and legal bases.
package ibex_test.purpose

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.rules

test_purpose_not_covered_by_any_agreement if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"purpose": "criminal_investigation"}))
	d.allow == false
	rules(d) == {"purpose.not_covered"}
	count(d.reasons) == 2
	d.reasons[0].text == "Agreement CA-CBSA--US-CBP--customs-2026 does not cover the purpose criminal investigation."
	d.reasons[0].clause == "CA-CBSA--US-CBP--customs-2026: purposes"
}

test_purpose_not_in_taxonomy if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"purpose": "tourism"}))
	d.allow == false
	"purpose.unknown" in rules(d)
	"purpose.not_covered" in rules(d)
}

test_legal_basis_not_in_taxonomy if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"legal_basis": "made_up_law"}))
	d.allow == false
	"legal_basis.unknown" in rules(d)
	"legal_basis.not_covered" in rules(d)
}

test_legal_basis_does_not_permit_the_purpose if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"purpose": "migration_management", "legal_basis": "ca_customs_act_s107"}))
	d.allow == false
	"legal_basis.not_for_purpose" in rules(d)
	some r in d.reasons
	r.rule == "legal_basis.not_for_purpose"
	r.citation == "Customs Act, R.S.C. 1985, c. 1 (2nd Supp.), s. 107(8)"
}

test_legal_basis_not_in_agreement_cites_the_agreement_first_basis if {
	d := decide(input_for("CA-CBSA", "US-CBP", {"jurisdiction": "CA", "legal_basis": "ca_privacy_act_s8_2_f"}))
	d.allow == false
	some r in d.reasons
	r.clause == "US-CBP--CA-CBSA--screening-2026: legal_bases"
	r.citation == "19 U.S.C. § 1628"
}

test_second_legal_basis_of_an_agreement_is_cited_when_invoked if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"purpose": "migration_management", "legal_basis": "ca_us_visa_immigration_2012"}))
	d.allow == true
	contains(d.reasons[0].citation, "Sharing of Visa and Immigration Information")
}
