# Jurisdiction: the requester must act where the federation document says it acts, and the
# agreement must allow the data to be used there. A country covers its subdivisions (US covers
# US-WA); a subdivision does not cover its country.
package ibex.jurisdiction

import data.ibex.context.candidates
import data.ibex.context.country
import data.ibex.context.jurisdiction
import data.ibex.lib

requester_jurisdictions := {j: true | some j in input.requester.jurisdictions}

query_violations contains "jurisdiction.not_requester" if {
	not lib.covers(requester_jurisdictions, jurisdiction, country)
}

violations contains [id, "jurisdiction.outside"] if {
	some id, a in candidates
	not lib.covers(a.jurisdiction_set, jurisdiction, country)
}
