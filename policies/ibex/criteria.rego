# Minimum criteria ("no fishing"): a query must identify its subject precisely enough, by giving
# in full at least one of the alternative sets of criteria fields listed for the subject type:
# the agreement's own list, or else the taxonomy's default (the loader resolves which). A
# criteria field inside a listed field gives it (name.surname gives name). A follow-up cites
# the reference of an earlier hit, which is precise by construction, so it is exempt.
package ibex.criteria

import data.ibex.context.candidates
import data.ibex.context.follow_up
import data.ibex.context.given
import data.ibex.context.purpose
import data.ibex.context.subject

satisfied(fields) if {
	every f in fields {
		given[f]
	}
}

_identifies(a) if {
	some fields in a.criteria[subject]
	satisfied(fields)
}

violations contains [id, "criteria.insufficient"] if {
	not follow_up
	some id, a in candidates
	a.allowed[purpose][subject]
	not _identifies(a)
}
