"""``ibex policy``: work with the Rego policies and disclosure agreements.

``ibex policy test`` runs the Rego unit tests with coverage. Each action is one small function
registered in :func:`register`; later actions (check, explain, simulate, diff) add a parser and
a function the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_POLICIES = Path("policies")


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="test and inspect the Rego policies and agreements")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    t = psub.add_parser(
        "test",
        help="run policies/**/*_test.rego and print line coverage",
        description="Run every test_* rule of every *_test.rego file with regorus, against the "
        "bundle's modules and data, and print each result and the line coverage of each "
        "module. Exits 1 if a test fails or coverage is below --coverage-min.",
    )
    _policies_arg(t)
    t.add_argument(
        "--coverage-min",
        type=float,
        default=90.0,
        metavar="PERCENT",
        help="fail when line coverage of the policy modules is below this (default 90)",
    )
    t.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    t.set_defaults(func=_test)


def _policies_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        type=Path,
        default=DEFAULT_POLICIES,
        metavar="DIR",
        help="the policies directory (default: ./policies)",
    )


def _test(args: argparse.Namespace) -> int:
    from ibex.policy_bundle import PolicyBundle
    from ibex.policy_testing import run_tests

    report = run_tests(PolicyBundle.load(args.policies))
    for result in report.results:
        if not result.passed:
            print(f"FAIL {result.file}: {result.name}: {result.detail}")
        elif not args.quiet:
            print(f"PASS {result.file}: {result.name}")
    print()
    print("coverage (lines of policy modules evaluated by the tests):")
    for cov in report.coverage:
        missing = ",".join(str(n) for n in sorted(cov.not_covered))
        print(
            f"  {cov.file:32s} {cov.percent:6.1f}%"
            + (f"  not covered: {missing}" if missing else "")
        )
    passed = len(report.results) - len(report.failed)
    print(f"total {report.percent:.1f}% ; {passed} passed, {len(report.failed)} failed")
    if not report.results:
        print("no test rules found: a policy without tests does not pass")
        return 1
    if report.failed:
        return 1
    if report.percent < args.coverage_min:
        print(f"coverage {report.percent:.1f}% is below the minimum {args.coverage_min:g}%")
        return 1
    return 0
