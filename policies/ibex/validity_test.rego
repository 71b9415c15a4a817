# Validity dates.
package ibex_test.validity

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.rules

pilot_query := {
	"jurisdiction": "MX",
	"legal_basis": "us_8_usc_1105",
	"subject_type": "travel_document",
	"criteria_fields": ["document_number", "issuing_country"],
	"requested_fields": ["status"],
}

test_expired_agreement_denies if {
	d := decide(input_for("MX-INM", "US-CBP", pilot_query))
	d.allow == false
	rules(d) == {"agreement.expired"}
	d.reasons[0].text == "Agreement US-CBP--MX-INM--pilot-2023 expired on 2024-12-31 and no longer allows any disclosure."
	d.reasons[0].clause == "US-CBP--MX-INM--pilot-2023: valid_until"
}

test_agreement_applies_on_its_last_day if {
	inp := input_for("MX-INM", "US-CBP", pilot_query)
	d := decide(object.union(inp, {"now": "2024-12-31T23:59:59.000Z"}))
	d.allow == true
}

test_agreement_not_yet_valid if {
	d := decide(input_for("CA-RCMP", "US-CBP", {
		"purpose": "counter_terrorism",
		"legal_basis": "us_8_usc_1105",
		"jurisdiction": "CA",
		"case_reference_cited": true,
		"seriousness": "very_serious",
		"mode": "hit_no_hit",
		"requested_fields": [],
	}))
	d.allow == false
	"agreement.not_yet_valid" in rules(d)
	"purpose.not_covered" in rules(d)
}

test_missing_time_fails_closed if {
	inp := object.remove(input_for("US-CBP", "CA-CBSA", {}), ["now"])
	d := decide(inp)
	d.allow == false
	"input.invalid" in rules(d)
	"agreement.expired" in rules(d)
}
