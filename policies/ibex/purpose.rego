# Purpose limitation: a query must state a purpose and a legal basis from the federation's
# taxonomy, the legal basis must permit that purpose, and the agreement must cover both.
package ibex.purpose

import data.ibex.context.candidates
import data.ibex.context.purpose
import data.ibex.context.q
import data.ibex.context.taxonomy

query_violations contains "purpose.unknown" if not taxonomy.purposes[purpose]

query_violations contains "legal_basis.unknown" if not taxonomy.legal_bases[q.legal_basis]

query_violations contains "legal_basis.not_for_purpose" if {
	basis := taxonomy.legal_bases[q.legal_basis]
	taxonomy.purposes[purpose]
	not basis.purpose_set[purpose]
}

violations contains [id, "purpose.not_covered"] if {
	some id, a in candidates
	not a.purpose_set[purpose]
}

violations contains [id, "legal_basis.not_covered"] if {
	some id, a in candidates
	not a.citation_by_basis[q.legal_basis]
}
