"""Shared test set-up.

``IBEX_REQUIRE_ALL=1`` (set by .ci/run) turns every skip into a failure, so that CI cannot go
green while silently not running a test (a missing browser, a missing tool).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRE_ALL = os.environ.get("IBEX_REQUIRE_ALL") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but IBEX_REQUIRE_ALL=1 forbids skips: {report.longrepr}"
    return report
