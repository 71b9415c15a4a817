"""The ``ibex`` front door: help, key generation, schema validation, the kernel demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ibex.cli import build_parser, join_opaque_values, main
from ibex.keys import MemberKeys


def test_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ibex.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("keys", "schema", "demo"):
        assert command in proc.stdout


def test_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--member", "CA-CBSA", "--out", str(tmp_path)]) == 0
    keys = MemberKeys.load(tmp_path, "CA-CBSA")
    assert keys.public.signing_keyid in capsys.readouterr().out
    # A second run refuses to overwrite and says so, with a non-zero exit.
    assert main(["keys", "generate", "--member", "CA-CBSA", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keys", "show", str(tmp_path / "CA-CBSA.public.json")]) == 0
    assert json.loads(capsys.readouterr().out)["member"] == "CA-CBSA"


def test_keys_generate_refuses_a_bad_member_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--member", "cbsa", "--out", str(tmp_path)]) == 2
    assert "member id" in capsys.readouterr().err


def test_db_key(tmp_path: Path) -> None:
    assert main(["keys", "db-key", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_schema_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"imo": "IMO9074729", "name": "EVER GIVEN"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"imo": "IMO9074728", "name": "EVER GIVEN"}))
    assert main(["schema", "validate", "--type", "vessel", str(good)]) == 0
    assert main(["schema", "validate", "--type", "vessel", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "/imo" in out
    assert "9074728" not in out  # errors name the place, never the value


def test_schema_list_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "list"]) == 0
    assert "person" in capsys.readouterr().out
    assert main(["schema", "fields", "person"]) == 0
    assert "date_of_birth" in capsys.readouterr().out


def test_demo_options(capsys: pytest.CaptureFixture[str]) -> None:
    # The demo itself runs end to end in tests/e2e/test_demo.py; here only its front door.
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dir", "--port", "--records", "--once", "--json"):
        assert option in out


@pytest.mark.parametrize("reference", ["-Qx3_b2", "--9aZ", "plain-ref"])
def test_a_follow_up_reference_may_begin_with_a_dash(reference: str) -> None:
    """Hit references are random base64url, so one in 64 begins with "-"; the officer pastes it
    after --follow-up as printed, and argparse must not take it for an option."""
    argv = [
        *("query", "--config", "c.toml", "--officer", "o-1", "--purpose", "border_screening"),
        *("--legal-basis", "b", "--jurisdiction", "CA", "--type", "person"),
        *("--follow-up", reference, "--target", "US-CBP"),
    ]
    args = build_parser().parse_args(join_opaque_values(argv))
    assert args.follow_up == reference and args.target == ["US-CBP"]
    joined = join_opaque_values([*argv, "--", "--follow-up", "x"])
    assert joined[-2:] == ["--follow-up", "x"]  # after "--" nothing is rewritten
