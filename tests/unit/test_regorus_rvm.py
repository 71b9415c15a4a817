"""Canaries for regorus's compiled mode (regorus.Program / regorus.Rvm), which IBEX does not use
because of the two bugs below (docs/POLICY.md §8). The interpreter IBEX uses is checked on the
same rules, so each canary is about the RVM alone. When a regorus upgrade fixes one, its strict
xfail turns into a failure: recheck the RVM against the golden decisions then."""

from __future__ import annotations

import json

import pytest
import regorus

# An empty nested comprehension inside the outer comprehension's domain.
NESTED = "package t\nout := [r | some p in [[1 | false], [2]]; some r in p]\n"

# `every` over a collection with an element that fails the body: Rego says false (undefined).
# The shipped policy's quick checks (query._fine, agreement._identifies) are written with it, so
# this one would turn a denial into an allow.
EVERY = 'package t\nk := {"a": true}\nout if { every f in ["a", "b"] { k[f] } }\n'


def _rvm(source: str) -> object:
    program = regorus.Program.compile_from_modules("{}", [("t.rego", source)], ["data.t.out"])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json("{}")
    vm.set_input_json("{}")
    return json.loads(vm.execute())


def _interpreter(source: str) -> object:
    engine = regorus.Engine()
    engine.add_policy("t.rego", source)
    return engine.eval_rule("data.t.out")


def test_the_interpreter_gets_nested_comprehensions_right() -> None:
    assert _interpreter(NESTED) == [2]


def test_the_interpreter_gets_every_right() -> None:
    assert _interpreter(EVERY) is None  # undefined: "b" is not in k
    assert _interpreter(EVERY.replace('"b"', '"a"')) is True


@pytest.mark.xfail(
    strict=True,
    reason="regorus 0.13 RVM: an empty nested comprehension empties the outer one",
)
def test_the_rvm_gets_nested_comprehensions_right() -> None:
    assert _rvm(NESTED) == [2]


@pytest.mark.xfail(
    strict=True,
    reason="regorus 0.13 RVM: `every` holds even when an element fails its body (fails open)",
)
def test_the_rvm_gets_every_right() -> None:
    assert _rvm(EVERY) is not True
