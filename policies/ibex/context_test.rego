# The facts of the query: one object for a well-formed input, the same facts one by one for a
# malformed one.
package ibex_test.context

import data.ibex.context
import data.ibex_test.helpers.input_for

test_the_fast_object_equals_the_facts_one_by_one if {
	inp := input_for("US-CBP", "CA-RCMP", {"follow_up": true, "officer_confirmed": true, "seriousness": "serious", "case_reference_cited": true, "jurisdiction": "US-WA"})
	fast := context.values with input as inp
	slow := context._partial with input as inp
	fast == slow
	fast.country == "US"
	fast.follow_up == true
	fast.has_case_reference == true
	fast.stated == 2
	fast.given == {"date_of_birth", "name", "name.given_names", "name.surname"}
	fast.requested == {"aliases": "aliases", "date_of_birth": "date_of_birth", "name": "name"}
}

test_a_fact_that_cannot_be_computed_is_absent if {
	inp := input_for("US-CBP", "CA-CBSA", {})
	broken := object.union(object.remove(inp, ["query"]), {"query": object.remove(inp.query, ["purpose"])})
	values := context.values with input as broken
	not values.purpose
	not values.purpose_label
	values.subject == "person"
	values.has_case_reference == false
	values.stated == 0
}
