# Validity dates: an agreement applies from its valid_from day to its valid_until day
# inclusive, judged on the UTC date of the decision time the broker supplies (input.now). Each rule is
# written as "not <the condition that must hold>" so that a missing date fails closed.
package ibex.validity

import data.ibex.context.candidates
import data.ibex.context.today

violations contains [id, "agreement.expired"] if {
	some id, a in candidates
	not today <= a.valid_until
}

violations contains [id, "agreement.not_yet_valid"] if {
	some id, a in candidates
	not today >= a.valid_from
}
