"""``ibex demo`` end to end: the command a new user runs first, run here as they would run it.

One ``ibex demo --once`` run (a small ``--records``) is shared by the module; each test checks one
scenario outcome from the machine-readable summary it wrote (and the table it printed), so a
broken outcome names itself. The demo's machinery (ibex.demofed) is the integration tests' too.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ibex.demofed import busy_ports

PROCESSES = 6  # the broker and five connectors


@dataclass(frozen=True)
class DemoRun:
    dir: Path
    port: int
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]

    def step(self, key: str) -> dict[str, Any]:
        [step] = [s for s in self.summary["steps"] if s["step"] == key]
        return dict(step)

    def facts(self, key: str) -> dict[str, Any]:
        return dict(self.step(key)["facts"])


def free_port_block(count: int = PROCESSES) -> int:
    """A first port such that it and the ``count - 1`` after it are free on loopback."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if not busy_ports(range(base, base + count)):
            return base
    raise RuntimeError("no block of free loopback ports")


def ibex(*args: str) -> list[str]:
    return [sys.executable, "-m", "ibex.cli", *args]


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    root = tmp_path_factory.mktemp("demo") / "federation"
    port = free_port_block()
    done = subprocess.run(
        ibex(
            "demo", "--once", "--json", "--records", "200", "--dir", str(root), "--port", str(port)
        ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    summary_file = root / "demo-summary.json"
    assert summary_file.is_file(), done.stdout + done.stderr
    return DemoRun(
        root,
        port,
        done.returncode,
        done.stdout,
        done.stderr,
        json.loads(summary_file.read_text()),
    )


def test_every_step_had_its_expected_outcome_and_exit_status_is_zero(demo: DemoRun) -> None:
    failed = [s for s in demo.summary["steps"] if not s["ok"]]
    assert not failed, json.dumps(failed, indent=2, ensure_ascii=False)
    assert demo.summary["ok"] is True
    assert demo.returncode == 0, demo.stderr
    assert [s["step"] for s in demo.summary["steps"]] == [
        "minimised",
        "denied",
        "hit_follow_up",
        "vessel",
        "timeout",
        "partner_joins",
        "tampered",
        "audit",
    ]
    # --json: the summary on stdout, the table for people on stderr.
    assert json.loads(demo.stdout) == demo.summary
    assert "UNEXPECTED" not in demo.stderr
    for step in demo.summary["steps"]:
        assert step["title"] in demo.stderr


def test_1_allowed_query_is_minimised(demo: DemoRun) -> None:
    facts = demo.facts("minimised")
    assert facts["status"] == "answered"
    assert facts["verification"] == "verified"
    assert facts["found_planted"] is True
    assert facts["agreement"] == "US-CBP--CA-CBSA--screening-2026"
    assert {"sex", "place_of_birth", "aliases"} <= set(facts["withheld"])
    assert set(facts["released_fields"]) <= set(facts["allowed_fields"])
    assert not set(facts["released_fields"]) & set(facts["withheld"])
    assert "withheld: " in "\n".join(demo.step("minimised")["why"])


def test_2_purpose_not_covered_is_denied_with_rule_sentence_and_citation(demo: DemoRun) -> None:
    facts = demo.facts("denied")
    assert facts["status"] == "denied"
    assert facts["records"] == 0
    assert set(facts["rules"]) & {"purpose.not_covered", "legal_basis.not_for_purpose"}
    assert all(facts["texts"])
    assert any(facts["citations"])


def test_3_hit_no_hit_then_follow_up_gets_the_full_record(demo: DemoRun) -> None:
    facts = demo.facts("hit_follow_up")
    assert facts["mode"] == "hit_no_hit"
    assert facts["hits"] == 1
    assert facts["records_in_first_answer"] == 0
    assert facts["follow_up_status"] == "answered"
    assert facts["follow_up_mode"] == "full"
    assert facts["follow_up_records"] == 1
    assert facts["follow_up_matches"] is True


def test_4_vessel_answered_by_the_coast_guard(demo: DemoRun) -> None:
    facts = demo.facts("vessel")
    assert facts["status"] == "answered"
    assert facts["names"] == ["NORTHERN DAWN"]
    assert facts["match_rules"] == ["identifier_exact"]


def test_5_slow_partner_gives_a_partial_answer_marked_timed_out(demo: DemoRun) -> None:
    facts = demo.facts("timeout")
    assert facts["statuses"]["US-USCG"] == "timeout"
    assert facts["statuses"]["US-CBP"] in ("answered", "denied")
    assert facts["seconds"] < facts["target_timeout_seconds"] + 2.0


def test_the_partner_joins_during_the_demo(demo: DemoRun) -> None:
    facts = demo.facts("partner_joins")
    assert facts["registered"] is True
    assert {"person", "travel_document"} <= set(facts["schemas"])


def test_6_tampered_answer_is_discarded_by_the_gateway(demo: DemoRun) -> None:
    facts = demo.facts("tampered")
    assert (facts["clean_status"], facts["clean_verification"]) == ("answered", "verified")
    assert facts["clean_hits"] == 1
    assert facts["tampered_status"] == "discarded"
    assert facts["tampered_verification"].startswith("failed")
    assert facts["tampered_passed_on"] is False


def test_7_audit_checkpoint_verified_with_an_inclusion_proof(demo: DemoRun) -> None:
    facts = demo.facts("audit")
    assert facts["verify_exit"] == 0
    assert facts["verify_output"].startswith("audit log OK")
    assert facts["inclusion_verified"] is True
    assert facts["proof_index"] < facts["checkpoint_size"]
    assert facts["entry_holds_criteria"] is False


def test_demo_json_tells_scripts_where_everything_is(demo: DemoRun) -> None:
    path = demo.dir / "demo.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["broker_url"] == f"http://127.0.0.1:{demo.port}"
    members = doc["members"]
    assert [m["id"] for m in members] == ["CA-CBSA", "CA-RCMP", "US-CBP", "US-USCG", "MX-INM"]
    for offset, m in enumerate(members, start=1):
        assert m["connector_url"] == f"http://127.0.0.1:{demo.port + offset}"
        assert Path(m["config"]).is_file()
        assert m["gateway_token"]
        assert m["records"] >= 200
        assert m["registered"] is True
    assert members[-1]["joins"] == "during the demo"
    assert doc["audit"]["oversight_token"]
    assert doc["audit"]["log_vkey"].startswith("ibex-demo.ibex/")
    # The console's users, one per role and two legal officers for the two-person rule.
    assert doc["console"]["url"].endswith("/console/")
    roles = sorted(u["role"] for u in doc["console"]["users"])
    assert roles == ["admin", "legal-officer", "legal-officer", "oversight"]
    assert all(len(u["password"]) >= 12 for u in doc["console"]["users"])


def test_no_process_is_left_behind(demo: DemoRun) -> None:
    assert not [p for p in range(demo.port, demo.port + PROCESSES) if listening(p)]


def console_login_works(manifest: Path) -> None:
    """A legal officer from demo.json logs into the running console."""
    doc = json.loads(manifest.read_text())
    user = next(u for u in doc["console"]["users"] if u["role"] == "legal-officer")
    with httpx.Client(base_url=doc["console"]["url"], trust_env=False, timeout=30) as client:
        page = client.get("login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page
        resp = client.post(
            "login",
            data={"csrf": csrf.group(1), "name": user["name"], "password": user["password"]},
        )
        assert resp.status_code in (200, 303), resp.text
        home = client.get("federation")
        assert home.status_code == 200
        assert user["name"] in home.text


def test_serves_until_interrupted_then_stops_every_process(tmp_path: Path) -> None:
    port = free_port_block()
    with subprocess.Popen(
        ibex("demo", "--records", "20", "--dir", str(tmp_path / "fed"), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            seen = []
            deadline = time.monotonic() + 120
            for line in proc.stdout:
                seen.append(line)
                if "Ctrl-C stops every process" in line or time.monotonic() > deadline:
                    break
            assert any("Ctrl-C" in line for line in seen), "".join(seen)
            assert all(listening(p) for p in range(port, port + PROCESSES))
            console_login_works(tmp_path / "fed" / "demo.json")
            os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
            # read(), not communicate(timeout=...), which would skip what the iterator buffered.
            rest = proc.stdout.read()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = "".join(seen) + rest
    assert "curl -s http://127.0.0.1:" in text
    assert "/console/" in text
    assert "every process stopped" in rest
    assert proc.returncode == 0, text
    assert not [p for p in range(port, port + PROCESSES) if listening(p)]


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run(
            ibex("demo", "--once", "--dir", str(tmp_path / "fed"), "--port", str(port - 2)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"{port}" in done.stderr and "--port" in done.stderr
    assert not (tmp_path / "fed").exists()
