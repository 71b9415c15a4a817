# Helpers shared by every IBEX policy module.
package ibex.lib

# The members of a set as a sorted array. sort() of a set is not indexable in every Rego
# implementation (rego-cpp 1.5 returns undefined for sort(s)[0]); sort() of an array is.
sorted(s) := sort([x | some x in s])

# A list of names (an array) as "a, b and c" for a sentence.
names(xs) := xs[0] if count(xs) == 1

names(xs) := concat(" and ", [concat(", ", array.slice(xs, 0, count(xs) - 1)), xs[count(xs) - 1]]) if {
	count(xs) > 1
}

# Whether a set of jurisdictions ({code: true}) covers the query's jurisdiction: exactly, or the
# query's jurisdiction is a subdivision (US-WA) of a listed country (US). A listed subdivision
# does not cover its whole country.
covers(set, jurisdiction, country) if {
	some j in [jurisdiction, country]
	set[j]
}
