"""Readiness checks shared by the broker and the connector (``GET /readyz``).

``/healthz`` says the process answers; ``/readyz`` says it can do its job *now*: its audit log
reads, its key files are still there and readable with safe modes, and its policy engine
decides. A load balancer or Kubernetes takes a not-ready instance out of rotation; nothing here
changes state. The answer names which check failed, never a path or a key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ibex.keys import MemberKeys, load_public
from ibex.policy_engine import PolicyEngine
from ibex.store import load_db_key
from ibex.web import json_response, problem_response

Check = tuple[str, Callable[[], object]]
# An engine that cannot evaluate says so with one of these rules (ibex.policy_engine); a denial
# or an undefined result for the probe input is a *working* engine.
ENGINE_FAILURES = frozenset({"engine.error", "engine.timeout", "engine.unreachable"})
PROBE_INPUT: dict[str, Any] = {"target": "READINESS-PROBE", "probe": True}


def key_files_check(
    keys_dir: Path,
    member: str,
    db_key_file: Path | None,
    db_key_env: str | None,
    public_key_files: Sequence[Path] = (),
) -> Callable[[], None]:
    """Re-read the signing, encryption and database keys (and trusted public keys)."""

    def check() -> None:
        MemberKeys.load(keys_dir, member)
        load_db_key(db_key_file, db_key_env)
        for path in public_key_files:
            load_public(path)

    return check


def engine_check(engine: Callable[[], PolicyEngine]) -> Callable[[], None]:
    """Ask the engine for a decision on a probe input; an engine failure is not ready."""

    def check() -> None:
        decision = engine().decide(PROBE_INPUT)
        failed = {r.rule for r in decision.reasons} & ENGINE_FAILURES
        if failed:
            raise RuntimeError(sorted(failed)[0])

    return check


def run_checks(checks: Sequence[Check]) -> list[str]:
    """The names of the checks that failed (any exception is a failure)."""
    failed: list[str] = []
    for name, check in checks:
        try:
            check()
        except Exception:
            failed.append(name)
    return failed


def readiness_response(checks: Sequence[Check], ready_body: dict[str, Any]) -> Any:
    """``200 ready_body`` when every check passes, else a ``503 not-ready`` problem."""
    failed = run_checks(checks)
    if failed:
        return problem_response(
            {
                "type": "about:blank",
                "title": "Not ready",
                "status": 503,
                "detail": "; ".join(failed),
                "code": "not-ready",
                "checks": failed,
            }
        )
    return json_response(ready_body)
