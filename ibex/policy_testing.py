"""Running the Rego unit tests (``policies/**/*_test.rego``) with line coverage.

Every rule named ``test_*`` in a test module is evaluated with regorus against the bundle's
modules *and its data* (the shipped agreements and taxonomy, compiled by the loader), so tests
read like the cases a legal officer cares about ("CBP asking CBSA to screen a traveller is
allowed") and a change to an agreement that breaks one shows up here. A test passes when its
rule evaluates to ``true``; undefined, false or an error is a failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ibex.policy_bundle import PolicyBundle
from ibex.policy_engine import new_regorus_engine

_PACKAGE = re.compile(r"^package\s+([A-Za-z_][A-Za-z0-9_.]*)\s*$", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]+)\s+(?:if\b|:=|=|\{)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class TestResult:
    """One test rule's outcome; ``detail`` says why a failure failed."""

    file: str
    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FileCoverage:
    """Lines of one policy module the tests evaluated, and the lines they did not."""

    file: str
    covered: frozenset[int]
    not_covered: frozenset[int]

    @property
    def percent(self) -> float:
        total = len(self.covered) + len(self.not_covered)
        return 100.0 if total == 0 else 100.0 * len(self.covered) / total


@dataclass(frozen=True, slots=True)
class TestReport:
    results: tuple[TestResult, ...]
    coverage: tuple[FileCoverage, ...]

    @property
    def failed(self) -> tuple[TestResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def percent(self) -> float:
        """Line coverage over every non-test module together."""
        covered = sum(len(c.covered) for c in self.coverage)
        total = covered + sum(len(c.not_covered) for c in self.coverage)
        return 100.0 if total == 0 else 100.0 * covered / total


def discover(bundle: PolicyBundle) -> list[tuple[str, str, str]]:
    """(file, package, rule name) for every ``test_*`` rule, in file and then source order."""
    found = []
    for rel, text in sorted(bundle.tests.items()):
        package = _PACKAGE.search(text)
        if package is None:
            continue
        seen: set[str] = set()
        for match in _TEST_RULE.finditer(text):
            if match[1] not in seen:  # a test may have several bodies: evaluate it once
                seen.add(match[1])
                found.append((rel, package[1], match[1]))
    return found


def run_tests(bundle: PolicyBundle) -> TestReport:
    """Evaluate every test rule and collect coverage of the non-test modules."""
    engine = new_regorus_engine(bundle, tests=True)
    engine.set_enable_coverage(True)
    results = []
    for rel, package, name in discover(bundle):
        try:
            value: Any = engine.eval_rule(f"data.{package}.{name}")
        except Exception as exc:  # a Rego runtime error fails the test, it does not stop the run
            results.append(TestResult(rel, name, False, f"error: {exc}".splitlines()[0]))
            continue
        if value is True:
            results.append(TestResult(rel, name, True))
        else:
            shown = "undefined" if value is None else json.dumps(value)[:200]
            results.append(TestResult(rel, name, False, f"evaluated to {shown}"))
    report = json.loads(engine.get_coverage_report_as_json())
    coverage = tuple(
        FileCoverage(f["path"], frozenset(f["covered"]), frozenset(f["not_covered"]))
        for f in sorted(report["files"], key=lambda f: f["path"])
        if f["path"] in bundle.modules
    )
    return TestReport(tuple(results), coverage)
