# Conditions an agreement may set on every query: the recipient's case reference (required
# unless the agreement says requires_case_reference: false) and a minimum offence seriousness
# (none, minor, serious, very_serious; an absent seriousness counts as none).
package ibex.conditions

import data.ibex.context.candidates
import data.ibex.context.has_case_reference
import data.ibex.context.stated

violations contains [id, "case_reference.missing"] if {
	some id, a in candidates
	not case_reference_ok(a.case_reference_required)
}

# A case reference is needed unless the agreement (or its follow-up terms) says false.
case_reference_ok(required) if required == false

case_reference_ok(_) if has_case_reference

violations contains [id, "seriousness.too_low"] if {
	some id, a in candidates
	not stated >= a.seriousness_level
}
