# The sentence helpers.
package ibex_test.lib

import data.ibex.lib

test_names if {
	lib.names(["a"]) == "a"
	lib.names(["a", "b"]) == "a and b"
	lib.names(["a", "b", "c"]) == "a, b and c"
	lib.sorted({"b", "a"}) == ["a", "b"]
}
