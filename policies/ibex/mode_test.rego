# Hit/no-hit, full, and the two-step follow-up.
package ibex_test.mode

import data.ibex_test.helpers.decide
import data.ibex_test.helpers.input_for
import data.ibex_test.helpers.rules

investigation := {
	"purpose": "criminal_investigation",
	"legal_basis": "ca_privacy_act_s8_2_f",
	"case_reference_cited": true,
	"seriousness": "serious",
	"requested_fields": ["aliases", "date_of_birth", "name"],
}

follow_up := object.union(investigation, {
	"follow_up": true,
	"officer_confirmed": true,
	"criteria_fields": ["reference"],
})

test_full_request_under_hit_no_hit_agreement_is_downgraded if {
	d := decide(input_for("US-CBP", "CA-RCMP", investigation))
	d.allow == true
	d.mode == "hit_no_hit"
	d.fields == []
	d.withheld == ["aliases", "date_of_birth", "name"]
	rules(d) == {"allow.agreement", "mode.downgraded", "fields.withheld", "handling.applied"}
	some r in d.reasons
	r.rule == "mode.downgraded"
	r.text == "Only whether a matching record exists (hit/no-hit) is disclosed, because agreement CA-RCMP--US-CBP--investigations-2026 releases full data only on a follow-up to a hit."
	some w in d.reasons
	w.rule == "fields.withheld"
	w.text == "The fields aliases, date_of_birth and name are withheld because a hit/no-hit answer discloses only whether a matching record exists."
}

test_hit_no_hit_only_agreement_says_so if {
	d := decide(input_for("MX-INM", "CA-CBSA", {
		"purpose": "migration_management",
		"legal_basis": "ca_irpa_s8",
		"jurisdiction": "MX",
		"subject_type": "travel_document",
		"case_reference_cited": true,
		"criteria_fields": ["document_number", "issuing_country"],
		"requested_fields": ["status"],
	}))
	d.allow == true
	d.mode == "hit_no_hit"
	some r in d.reasons
	r.rule == "mode.downgraded"
	r.text == "Only whether a matching record exists (hit/no-hit) is disclosed, because agreement CA-CBSA--MX-INM--migration-2026 allows hit/no-hit answers only."
}

test_hit_no_hit_request_under_full_agreement if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"mode": "hit_no_hit", "requested_fields": []}))
	d.allow == true
	d.mode == "hit_no_hit"
	d.fields == []
	rules(d) == {"allow.agreement", "handling.applied"}
}

test_confirmed_follow_up_gets_full_data if {
	d := decide(input_for("US-CBP", "CA-RCMP", follow_up))
	d.allow == true
	d.mode == "full"
	d.fields == ["aliases", "date_of_birth", "name"]
	d.handling == "H2"
	d.retention_days == 180
	"follow_up.full" in rules(d)
}

test_unconfirmed_follow_up_is_denied if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(follow_up, {"officer_confirmed": false})))
	d.allow == false
	rules(d) == {"follow_up.unconfirmed"}
}

test_follow_up_without_case_reference_is_denied if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.union(follow_up, {"case_reference_cited": false})))
	d.allow == false
	rules(d) == {"case_reference.missing"}
	count(d.reasons) == 1
}

test_follow_up_without_seriousness_is_denied if {
	d := decide(input_for("US-CBP", "CA-RCMP", object.remove(follow_up, ["seriousness"])))
	d.allow == false
	rules(d) == {"seriousness.missing", "seriousness.too_low"}
}

test_follow_up_not_allowed if {
	d := decide(input_for("MX-INM", "CA-CBSA", {
		"purpose": "migration_management",
		"legal_basis": "ca_irpa_s8",
		"jurisdiction": "MX",
		"subject_type": "travel_document",
		"case_reference_cited": true,
		"criteria_fields": ["reference"],
		"requested_fields": ["status"],
		"follow_up": true,
		"officer_confirmed": true,
	}))
	d.allow == false
	rules(d) == {"follow_up.not_allowed"}
}

test_follow_up_needing_only_confirmation if {
	d := decide(input_for("CA-CBSA", "MX-INM", {
		"purpose": "migration_management",
		"legal_basis": "mx_ley_migracion",
		"jurisdiction": "CA",
		"case_reference_cited": true,
		"criteria_fields": ["reference"],
		"requested_fields": ["nationalities"],
		"follow_up": true,
		"officer_confirmed": true,
	}))
	d.allow == true
	d.mode == "full"
	d.fields == ["nationalities"]
}

test_follow_up_under_full_agreement_is_an_ordinary_query if {
	d := decide(input_for("US-CBP", "CA-CBSA", {"follow_up": true, "criteria_fields": ["reference"]}))
	d.allow == true
	d.mode == "full"
	not "follow_up.full" in rules(d)
}
