# Jurisdictions of the requester and of the agreement.
package ibex_test.jurisdiction

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.rules

test_requester_asks_for_a_jurisdiction_it_does_not_act_in if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"jurisdiction": "MX"}))
	d.allow == false
	"jurisdiction.not_requester" in rules(d)
}

test_agreement_does_not_cover_the_jurisdiction if {
	inp := input_for("US-CBP", "CA-CBSA", {"jurisdiction": "MX"})
	d := decide(object.union(inp, {"requester": object.union(inp.requester, {"jurisdictions": ["US", "MX"]})}))
	d.allow == false
	rules(d) == {"jurisdiction.outside"}
	d.reasons[0].text == "Agreement CA-CBSA--US-CBP--customs-2026 does not allow the data to be used in MX; it covers US."
}

test_country_covers_its_subdivision if {
	d := decide(input_for("CA-RCMP", "US-USCG", {
		"purpose": "maritime_security",
		"legal_basis": "us_14_usc_522",
		"jurisdiction": "CA-BC",
		"subject_type": "vessel",
		"criteria_fields": ["imo"],
		"requested_fields": ["flag", "imo", "name"],
		"case_reference_cited": true,
		"seriousness": "minor",
	}))
	d.allow == true
	d.agreement == "US-USCG--CA-RCMP--shiprider-2026"
	d.handling == "TLP:AMBER"
}

test_subdivision_does_not_cover_its_country if {
	d := decide(input_for("US-USCG", "CA-RCMP", {
		"purpose": "maritime_security",
		"legal_basis": "ca_us_shiprider",
		"jurisdiction": "US",
		"subject_type": "vessel",
		"criteria_fields": ["mmsi"],
		"requested_fields": ["imo"],
		"case_reference_cited": true,
	}))
	d.allow == false
	rules(d) == {"jurisdiction.outside"}
	d.reasons[0].text == "Agreement CA-RCMP--US-USCG--shiprider-2026 does not allow the data to be used in US; it covers CA-BC, CA-ON, CA-QC, US-MI, US-NY and US-WA."
}

test_listed_subdivision_allows if {
	d := decide(input_for("US-USCG", "CA-RCMP", {
		"purpose": "maritime_security",
		"legal_basis": "ca_us_shiprider",
		"jurisdiction": "US-WA",
		"subject_type": "vessel",
		"criteria_fields": ["mmsi"],
		"requested_fields": ["imo"],
		"case_reference_cited": true,
	}))
	d.allow == true
}
