# The decision as a whole: allow, minimisation, the choice between agreements, default deny.
package ibex_test.decision

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.members
import data.ibex_test.helpers.rules

test_screening_allowed_and_minimised if {
	d := decide(input_for("US-CBP", "CA-CBSA", {}))
	d.allow == true
	d.mode == "full"
	d.agreement == "CA-CBSA--US-CBP--screening-2026"
	d.fields == ["date_of_birth", "name"]
	d.withheld == ["aliases"]
	d.handling == "H1"
	d.retention_days == 365
	rules(d) == {"allow.agreement", "fields.withheld", "handling.applied"}
	d.reasons[0].rule == "allow.agreement"
	d.reasons[0].citation == "Customs Act, R.S.C. 1985, c. 1 (2nd Supp.), s. 107(8)"
	d.reasons[0].clause == "CA-CBSA--US-CBP--screening-2026: legal_bases"
	d.reasons[1].text == "The field aliases is withheld because agreement CA-CBSA--US-CBP--screening-2026 does not allow it for border screening."
}

test_no_requested_fields_means_every_allowed_field if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"requested_fields": []}))
	d.allow == true
	d.fields == ["date_of_birth", "identifiers", "name", "nationalities", "sex"]
	d.withheld == []
	not "fields.withheld" in rules(d)
}

test_nested_requested_field_follows_its_top_level_field if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"requested_fields": ["aliases.surname", "name.surname"]}))
	d.fields == ["name.surname"]
	d.withheld == ["aliases.surname"]
}

# Two agreements allow: the one that releases more of the request wins, never a mixture.
test_choice_prefers_the_agreement_that_answers_more if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"requested_fields": ["date_of_birth", "name"]}))
	d.agreement == "CA-CBSA--US-CBP--screening-2026"
	d.fields == ["date_of_birth", "name"]
}

# Equal answers: the more protective agreement (here the shorter retention) wins.
test_choice_between_equals_prefers_the_more_protective if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"requested_fields": ["name"]}))
	d.agreement == "CA-CBSA--US-CBP--screening-2026"
	d.retention_days == 365
}

# Only the customs agreement covers vehicles; the other's finding does not stop the allow.
test_choice_uses_the_only_agreement_that_covers_the_subject if {
	d := decide(input_for("US-CBP", "CA-CBSA", {
		"subject_type": "vehicle",
		"criteria_fields": ["vin"],
		"requested_fields": ["make", "plate", "vin"],
	}))
	d.allow == true
	d.agreement == "CA-CBSA--US-CBP--customs-2026"
	d.fields == ["plate", "vin"]
	d.withheld == ["make"]
	d.handling == "TLP:GREEN"
}

test_no_agreement_denies_by_default if {
	d := decide(input_for("CA-RCMP", "MX-INM", {"jurisdiction": "CA"}))
	d.allow == false
	d.mode == "none"
	d.fields == []
	d.withheld == ["aliases", "date_of_birth", "name"]
	d.agreement == null
	d.handling == null
	rules(d) == {"agreement.none"}
	d.reasons[0].text == "MX-INM has no disclosure agreement with CA-RCMP, so nothing can be disclosed."
}

test_suspended_provider_is_not_asked if {
	inp := input_for("US-CBP", "CA-CBSA", {})
	d := decide(object.union(inp, {"provider": object.union(members["CA-CBSA"], {"status": "suspended"})}))
	d.allow == false
	rules(d) == {"provider.inactive"}
}

test_inconsistent_input_is_refused if {
	inp := input_for("US-CBP", "CA-CBSA", {"requester": "US-USCG"})
	d := decide(inp)
	d.allow == false
	"input.invalid" in rules(d)
}

test_missing_input_is_refused if {
	d := decide({})
	d.allow == false
	"input.invalid" in rules(d)
}

test_unknown_mode_denies_by_default if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"mode": "everything"}))
	d.allow == false
	rules(d) == {"default.deny"}
}

test_query_findings_come_before_agreement_findings if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"purpose": "tourism", "jurisdiction": "MX"}))
	d.allow == false
	[r.rule | some r in d.reasons] == ["purpose.unknown", "jurisdiction.not_requester", "purpose.not_covered", "jurisdiction.outside", "purpose.not_covered", "jurisdiction.outside"]
	d.reasons[0].clause == ""
	d.reasons[2].clause == "CA-CBSA--US-CBP--customs-2026: purposes"
}

test_unknown_field_is_refused if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"requested_fields": ["name", "shoe_size"]}))
	d.allow == false
	rules(d) == {"fields.unknown"}
	d.reasons[0].text == "The query names fields that the shared person schema does not define (shoe_size), so it is refused as malformed."
}

test_unknown_criteria_field_is_refused if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"criteria_fields": ["date_of_birth", "name", "reference", "star_sign"]}))
	d.allow == false
	d.reasons[0].text == "The query names fields that the shared person schema does not define (reference and star_sign), so it is refused as malformed."
}

test_unknown_handling_code_cannot_be_applied if {
	id := "CA-CBSA--US-CBP--screening-2026"
	changed := object.union(data.ibex_data.agreements[id], {"handling": "H9"})
	d := data.ibex.decision with input as input_for("US-CBP", "CA-CBSA", {"subject_type": "crossing", "criteria_fields": ["crossing_id"], "requested_fields": ["direction"]})
		with data.ibex_data.agreements as object.union(data.ibex_data.agreements, {id: changed})
	d.allow == false
	"handling.unknown" in rules(d)
}
