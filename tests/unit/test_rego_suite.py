"""``ibex policy test``: every Rego test passes and coverage of the policy modules is ≥ 90 %."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ibex import cli_policy
from ibex.policy_bundle import PolicyBundle
from ibex.policy_testing import run_tests

ROOT = Path(__file__).resolve().parents[2]


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ibex")
    cli_policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_every_rego_test_passes_with_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    status = _main(["policy", "test", "--policies", str(ROOT / "policies")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 failed" in out and "coverage" in out


def test_every_rule_has_tests_and_coverage_is_at_least_90() -> None:
    report = run_tests(PolicyBundle.load(ROOT / "policies"))
    assert len(report.results) >= 40
    assert not report.failed
    assert report.percent >= 90.0
    assert {c.file for c in report.coverage} == set(PolicyBundle.load(ROOT / "policies").modules)


def test_a_failing_rego_test_fails_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "ibex/broken_test.rego").write_text(
        "package ibex_test.broken\n\n"
        "test_always_wrong if {\n\tdata.ibex.decision.allow == true\n}\n"
    )
    assert _main(["policy", "test", "--policies", str(policies), "--quiet"]) == 1
    assert "FAIL ibex/broken_test.rego: test_always_wrong" in capsys.readouterr().out


def test_coverage_below_the_minimum_fails(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "test", "--policies", str(ROOT / "policies"), "--coverage-min", "100.1"]
    assert _main([*argv, "--quiet"]) == 1
    assert "below the minimum" in capsys.readouterr().out
