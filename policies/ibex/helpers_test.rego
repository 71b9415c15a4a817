# Test helpers: members of the demo federation, a base query, and a way to build the decision
# input for one (requester, target) pair with changes. Tests run against the shipped
# agreements and taxonomy (the runner loads the bundle's data), on 2026-11-28.
package ibex_test.helpers

members := {
	"CA-CBSA": {"id": "CA-CBSA", "country": "CA", "agency_kind": "border", "jurisdictions": ["CA"], "status": "active"},
	"CA-RCMP": {"id": "CA-RCMP", "country": "CA", "agency_kind": "police", "jurisdictions": ["CA"], "status": "active"},
	"US-CBP": {"id": "US-CBP", "country": "US", "agency_kind": "customs", "jurisdictions": ["US"], "status": "active"},
	"US-USCG": {"id": "US-USCG", "country": "US", "agency_kind": "coast_guard", "jurisdictions": ["US"], "status": "active"},
	"MX-INM": {"id": "MX-INM", "country": "MX", "agency_kind": "immigration", "jurisdictions": ["MX"], "status": "active"},
}

base_query := {
	"purpose": "border_screening",
	"legal_basis": "ca_customs_act_s107",
	"jurisdiction": "US",
	"subject_type": "person",
	"schema_version": "1.0",
	"mode": "full",
	"criteria_fields": ["date_of_birth", "name.given_names", "name.surname"],
	"requested_fields": ["aliases", "date_of_birth", "name"],
	"follow_up": false,
	"officer_confirmed": false,
	"case_reference_cited": false,
}

# The input for requester asking target, with `changes` merged into the query.
input_for(requester, target, changes) := {
	"query": object.union(object.union(base_query, {"requester": requester}), changes),
	"target": target,
	"requester": object.remove(members[requester], ["status"]),
	"provider": members[target],
	"now": "2026-11-28T12:00:00.000Z",
}

decide(inp) := d if {
	d := data.ibex.decision with input as inp
}

# The rule ids of a decision's reasons, as a set.
rules(d) := {r.rule | some r in d.reasons}
