"""Differential test: our Rego is standard Rego, not one engine's dialect.

Every input of the corpus (every shipped agreement times representative queries, allowed and
denied; see tests/support/policy_corpus.py) is evaluated by regorus (the embedded default) and
by regopy, Microsoft's rego-cpp, an independent implementation. The decisions must be identical.

regopy 1.5.2 can abort its whole process on some constructs, so it runs in a subprocess
(tests/support/regopy_eval.py) fed one JSON input per line through ``set_input_term``; an input
it cannot evaluate (an error reply, or the process dying on it) is listed in the test output and
counted, never hidden, and the subprocess is restarted for the rest. The test fails when more
than MAX_UNEVALUATED inputs could not be evaluated, and when none were evaluated at all.

Known rego-cpp 1.5.2 divergences the policy avoids (see policies/ibex/decision.rego, lib.rego):
``sort(a_set)[0]`` is undefined, arrays do not compare with ``<``, ``some k, v in obj`` inside a
comprehension does not parse. With the shipped policy no input is known to fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ibex.policy_bundle import ENTRYPOINT, PolicyBundle
from ibex.policy_engine import new_regorus_engine
from tests.support.policy_corpus import corpus

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "support" / "regopy_eval.py"
MAX_UNEVALUATED = 0

pytestmark = pytest.mark.slow


class RegopyProcess:
    """The helper subprocess, restarted after a crash."""

    def __init__(self, policies: Path) -> None:
        self.policies = policies
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(self.policies)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline() or "{}")
        assert ready.get("ready"), f"regopy helper did not start: {ready}"

    def evaluate(self, inp: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(inp) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = self.proc.wait()
            self._close_pipes()
            self.proc = None
            return {"ok": False, "error": f"regopy process died (exit status {code})"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _close_pipes(self) -> None:
        assert self.proc is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
            self._close_pipes()


@pytest.fixture(scope="module")
def regopy_process() -> Iterator[RegopyProcess]:
    pytest.importorskip("regopy", reason="regopy (rego-cpp) is a dev dependency")
    proc = RegopyProcess(ROOT / "policies")
    yield proc
    proc.close()


def test_regorus_and_regopy_decide_the_corpus_identically(
    regopy_process: RegopyProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = PolicyBundle.load(ROOT / "policies")
    engine = new_regorus_engine(bundle)
    inputs = corpus(bundle)
    unevaluated: list[str] = []
    different: list[str] = []
    evaluated = 0
    allowed = 0
    for label, inp in inputs:
        engine.set_input(inp)
        expected = engine.eval_rule(ENTRYPOINT)
        reply = regopy_process.evaluate(inp)
        if not reply["ok"]:
            unevaluated.append(f"{label}: {reply['error']}")
            continue
        evaluated += 1
        allowed += bool(expected and expected["allow"])
        if reply["result"] != expected:
            different.append(f"{label}:\n  regorus {expected}\n  regopy  {reply['result']}")
    with capsys.disabled():
        print(
            f"\nregopy differential: {len(inputs)} inputs, {evaluated} evaluated by both "
            f"({allowed} allowed), {len(different)} different, "
            f"{len(unevaluated)} regopy could not evaluate"
        )
        for line in unevaluated:
            print(f"  regopy could not evaluate {line}")
    assert evaluated > 0, "regopy evaluated nothing: the differential proves nothing"
    assert 0 < allowed < evaluated, "the corpus must hold both allowed and denied inputs"
    assert not different, "\n".join(different[:5])
    assert len(unevaluated) <= MAX_UNEVALUATED, "\n".join(unevaluated)
