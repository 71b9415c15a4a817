# Values every module reads, computed once per decision. Rules (unlike functions) are evaluated
# once per query and then cached by the engine, and reading a rule is much cheaper than walking
# input or data again, so the modules read these instead of input and data directly.
package ibex.context

q := input.query

purpose := input.query.purpose

subject := input.query.subject_type

jurisdiction := input.query.jurisdiction

# The country a subdivision belongs to (US for US-WA; CA for CA).
country := split(input.query.jurisdiction, "-")[0]

# The UTC calendar day of the decision (YYYY-MM-DD); ISO dates compare correctly as strings.
today := substring(input.now, 0, 10)

follow_up if input.query.follow_up == true

confirmed if input.query.officer_confirmed == true

has_case_reference if {
	is_string(input.query.case_reference)
	input.query.case_reference != ""
}

seriousness_levels := {"none": 0, "minor": 1, "serious": 2, "very_serious": 3}

# The seriousness the query states; absent counts as none, an unknown word as below none.
seriousness := object.get(input.query, "seriousness", "none")

stated := object.get(seriousness_levels, seriousness, -1)

# Each requested field with the top-level field it belongs to (name.surname -> name).
requested := {f: split(f, ".")[0] | some f in input.query.requested_fields}

# The criteria fields, and every top-level field a criteria field lies in.
given := {c | some c in input.query.criteria_fields} | {split(c, ".")[0] | some c in input.query.criteria_fields}

agreements := data.ibex_data.agreements

taxonomy := data.ibex_data.taxonomy

# Only the agreements between this provider and this requester, from the index the loader
# precomputes, so a decision touches a handful of agreements however many the federation has.
candidates := {id: agreements[id] | some id in data.ibex_data.index[input.target][input.requester.id]}

purpose_label := taxonomy.purposes[purpose].label

purpose_label := purpose if not taxonomy.purposes[purpose]
