# The facts of the query every check reads, computed once per decision into ONE object, `values`,
# which the other modules pass around as `c`. regorus spends microseconds on each rule it
# evaluates, each reference into data and each function call, and a fraction of that on a
# local variable, so the facts are built in one rule body, from locals, without calls.
#
# When a fact cannot be computed (a malformed input: a member missing or of the wrong type),
# the object literal is undefined and `values` is `_partial` instead: the same facts, one rule
# body each, holding only those that can be computed. Every check then reads an absent fact as
# undefined and fails closed exactly as it would reading the input directly. For a well-formed
# input the two are equal (context_test.rego checks it).
package ibex.context

values := v if {
	q := input.query
	is_object(q)
	d := data.ibex_data
	seriousness := object.get(q, "seriousness", "none")
	v := {
		"purpose": q.purpose,
		"purpose_label": object.get(d.taxonomy.purposes, [q.purpose, "label"], q.purpose),
		"legal_basis": q.legal_basis,
		"subject": q.subject_type,
		"jurisdiction": q.jurisdiction,
		"country": substring(q.jurisdiction, 0, indexof(q.jurisdiction, "-")),
		"mode": q.mode,
		"today": substring(input.now, 0, 10),
		"follow_up": q.follow_up == true,
		"confirmed": q.officer_confirmed == true,
		"has_case_reference": q.case_reference_cited == true,
		"seriousness": seriousness,
		"stated": object.get({"none": 0, "minor": 1, "serious": 2, "very_serious": 3}, seriousness, -1),
		"requested": {f: substring(f, 0, indexof(f, ".")) | some f in q.requested_fields},
		"given": {f | some f in q.criteria_fields} | {substring(f, 0, indexof(f, ".")) | some f in q.criteria_fields},
		"target": input.target,
		"requester": input.requester.id,
		"d": d,
	}
} else := _partial

_partial["purpose"] := input.query.purpose

# The plain label of the purpose for sentences; the purpose itself when the taxonomy has none.
_partial["purpose_label"] := object.get(data.ibex_data.taxonomy.purposes, [input.query.purpose, "label"], input.query.purpose)

_partial["legal_basis"] := input.query.legal_basis

_partial["subject"] := input.query.subject_type

_partial["jurisdiction"] := input.query.jurisdiction

# The country a subdivision belongs to (US for US-WA; CA for CA): the text before the first
# "-" (substring with a negative length is the rest of the string).
_partial["country"] := substring(input.query.jurisdiction, 0, indexof(input.query.jurisdiction, "-"))

_partial["mode"] := input.query.mode

# The UTC calendar day of the decision (YYYY-MM-DD); ISO dates compare correctly as strings.
_partial["today"] := substring(input.now, 0, 10)

_partial["follow_up"] := input.query.follow_up == true

_partial["confirmed"] := input.query.officer_confirmed == true

_partial["has_case_reference"] := input.query.case_reference_cited == true

# The seriousness the query states; absent counts as none, an unknown word as below none.
_partial["seriousness"] := object.get(input.query, "seriousness", "none") if is_object(input.query)

_partial["stated"] := object.get({"none": 0, "minor": 1, "serious": 2, "very_serious": 3}, object.get(input.query, "seriousness", "none"), -1) if {
	is_object(input.query)
}

# Each requested field with the top-level field it lies in (name.surname -> name).
_partial["requested"] := {f: substring(f, 0, indexof(f, ".")) | some f in input.query.requested_fields}

# The criteria fields, and every top-level field a criteria field lies in.
_partial["given"] := {f | some f in input.query.criteria_fields} | {substring(f, 0, indexof(f, ".")) | some f in input.query.criteria_fields}

_partial["target"] := input.target

_partial["requester"] := input.requester.id

# The data document (agreements, index, taxonomy, sentences): reading data costs regorus far
# more than reading a local, so the modules read c.d instead.
_partial["d"] := data.ibex_data
