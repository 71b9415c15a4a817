"""The golden decisions (tests/support/policy_golden.py): the policy decides every frozen input
exactly as it did when the file was written — the same raw ``data.ibex.decision`` (allow, mode,
fields, withheld, handling, retention, agreement, and every reason's rule id, sentence,
citation and clause, in order) and, through the engine wrapper, the same
:class:`~ibex.messages.Decision`.

5,500 inputs: the differential corpus and 5,000 randomised ones, over the shipped agreements and
over the 1,000-synthetic-agreement set of the benchmark. The only inputs allowed to change are
the malformed ones on which the engine raised when the file was written (a non-array where the
policy iterates an array; ``build_input`` never produces one): they must still be denied and
release nothing, whichever way (an engine error or ``input.invalid``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ibex.policy_bundle import ENTRYPOINT, PolicyBundle
from ibex.policy_engine import RegorusEngine, _EngineBase, new_regorus_engine
from tests.support.policy_golden import SYNTHETIC_COUNT, read_golden
from tests.support.policy_golden import sets as golden_sets


class _Replay(_EngineBase):
    """The engine wrapper around the frozen raw results: what ``decide`` made of them."""

    name = "replay"

    def __init__(self, bundle: PolicyBundle, raw: Mapping[str, Any]) -> None:
        super().__init__(bundle, timeout=60.0, cache_size=0)
        self.raw = raw

    def _evaluate(self, decision_input: Mapping[str, Any]) -> object:
        if isinstance(self.raw, dict) and set(self.raw) == {"error"}:
            raise RuntimeError(self.raw["error"])
        return self.raw


@pytest.fixture(scope="module")
def golden() -> list[dict[str, Any]]:
    return read_golden()


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("golden")
    yield {name: path for name, path, _count, _members in golden_sets(tmp)}


def test_the_golden_file_covers_every_rule_and_both_sets(golden: list[dict[str, Any]]) -> None:
    assert len(golden) >= 5000
    assert {g["set"] for g in golden} == {"shipped", "synthetic"}
    decisions = [g["decision"] for g in golden if "error" not in (g["decision"] or {})]
    assert sum(d["allow"] for d in decisions) > 1000
    rules = {r["rule"] for d in decisions for r in d["reasons"]}
    # handling.unknown cannot happen with a bundle that loads (the schema and the taxonomy
    # fix the codes); the Rego tests cover it.
    assert len(rules) == 26 and "handling.unknown" not in rules


@pytest.mark.parametrize("set_name", ["shipped", "synthetic"])
def test_every_golden_decision_is_unchanged(
    set_name: str, golden: list[dict[str, Any]], policies: dict[str, Path]
) -> None:
    bundle = PolicyBundle.load(policies[set_name])
    if set_name == "synthetic":
        assert len(bundle.agreements) == SYNTHETIC_COUNT + 12
    raw_engine = new_regorus_engine(bundle)
    engine = RegorusEngine(bundle, cache_size=0)
    changed: list[str] = []
    checked = errors = 0
    for g in (g for g in golden if g["set"] == set_name):
        label, inp, expected = g["label"], g["input"], g["decision"]
        decision = engine.decide(inp)
        if isinstance(expected, dict) and set(expected) == {"error"}:
            errors += 1
            if decision.allow or decision.fields or decision.mode != "none":
                changed.append(f"{label}: was an engine error, now {decision}")
            continue
        raw_engine.set_input(inp)
        got = raw_engine.eval_rule(ENTRYPOINT)
        if got != expected:
            changed.append(f"{label}:\n  was {expected}\n  now {got}")
            continue
        if decision != _Replay(bundle, expected).decide(inp):
            changed.append(f"{label}: the wrapper's Decision differs: {decision}")
        checked += 1
    assert not changed, f"{len(changed)} decisions changed:\n" + "\n".join(changed[:5])
    assert checked > 2000 and errors < 50
