"""A canary for regorus's compiled mode (regorus.Program / regorus.Rvm), which IBEX does not use
yet because of the bug below (docs/POLICY.md §8). The interpreter IBEX uses is checked on the
same rule, so the canary is about the RVM alone. When a regorus upgrade fixes the RVM, the
strict xfail turns into a failure: recheck the RVM against the golden decisions then."""

from __future__ import annotations

import json

import pytest
import regorus

NESTED = "package t\nout := [r | some p in [[1 | false], [2]]; some r in p]\n"


def test_the_interpreter_gets_nested_comprehensions_right() -> None:
    engine = regorus.Engine()
    engine.add_policy("t.rego", NESTED)
    assert engine.eval_rule("data.t.out") == [2]


@pytest.mark.xfail(
    strict=True,
    reason="regorus 0.13 RVM: an empty nested comprehension empties the outer one",
)
def test_the_rvm_gets_nested_comprehensions_right() -> None:
    program = regorus.Program.compile_from_modules("{}", [("t.rego", NESTED)], ["data.t.out"])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json("{}")
    vm.set_input_json("{}")
    assert json.loads(vm.execute()) == [2]
