# Handling codes: everything disclosed under an agreement carries the agreement's handling code,
# a Europol SIENA code (H0-H3) or a FIRST Traffic Light Protocol 2.0 label, and the recipient may
# keep it only for the agreement's retention period. An agreement whose code the taxonomy does
# not define cannot be applied.
package ibex.handling

import data.ibex.context.candidates
import data.ibex.context.taxonomy

violations contains [id, "handling.unknown"] if {
	some id, a in candidates
	not taxonomy.handling[a.handling]
}

# How restrictive a code is (higher is stricter), used to prefer the more protective of two
# equally good agreements.
strictness(a) := taxonomy.handling[a.handling].strictness
