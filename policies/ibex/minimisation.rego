# Data minimisation: every field a query names must exist in the shared schema of its subject
# type (otherwise the query is malformed and denied); requested fields the agreement does not
# allow for the purpose and subject type are withheld, not a reason to deny. A query that
# requests no fields asks for every field the agreement allows. A hit/no-hit answer releases no
# fields at all.
package ibex.minimisation

import data.ibex.context.candidates
import data.ibex.context.follow_up
import data.ibex.context.purpose
import data.ibex.context.q
import data.ibex.context.requested
import data.ibex.context.subject

# Every field path of the subject type's schema, {path: true}, from the loader.
known := object.get(data.ibex_data.entities, subject, {})

# On a follow-up the only criterion is the sealed reference of the earlier hit.
_criterion_known(f) if known[f]

_criterion_known("reference") if follow_up

unknown := {f | some f; requested[f]; not known[f]} | {f | some f in q.criteria_fields; not _criterion_known(f)}

query_violations contains "fields.unknown" if count(unknown) > 0

# The agreement covers the subject type for the purpose when it lists fields for the pair (the
# loader keeps only pairs whose subject type the agreement lists).
violations contains [id, "subject_type.not_covered"] if {
	some id, a in candidates
	a.purpose_set[purpose]
	not a.allowed[purpose][subject]
}

# The fields released under agreement a in effective mode m.
released(a, m) := set() if m == "hit_no_hit"

released(a, m) := object.keys(a.allowed[purpose][subject]) if {
	m == "full"
	count(requested) == 0
}

released(a, m) := {f | some f; top := requested[f]; a.allowed[purpose][subject][top]} if {
	m == "full"
	count(requested) > 0
}

withheld(fields) := {f | some f; requested[f]; not fields[f]}
