"""CI turns skips into failures: prove the hook does it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("require_all", "expect_rc"), [("0", 0), ("1", 1)])
def test_skip_becomes_failure_under_require_all(
    tmp_path: Path, require_all: str, expect_rc: int
) -> None:
    test = tmp_path / "test_skipper.py"
    test.write_text("import pytest\n\ndef test_x():\n    pytest.skip('no browser')\n")
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    env = os.environ | {"IBEX_REQUIRE_ALL": require_all}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            str(test),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
