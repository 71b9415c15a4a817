"""The golden decisions: what ``data.ibex.decision`` answered, frozen, so that a rewrite of the
policy (for speed, for readability) can prove that it changed no decision.

The golden file ``tests/support/policy_golden.jsonl.gz`` (gzip-compressed JSON lines) holds one
line per input: ``{"set", "label", "input", "decision"}`` where ``set`` is ``shipped`` (the
shipped agreements) or ``synthetic`` (the shipped ones plus the 1,000 synthetic agreements the
benchmark builds, :func:`~tests.support.policy_corpus.synthetic_policies`) and ``decision`` is
the raw value of ``data.ibex.decision`` (``{"error": ...}`` when the engine raised). The inputs
are the differential-test corpus plus randomised inputs drawn with a fixed seed: every purpose,
legal basis, jurisdiction (subdivisions, countries, elsewhere), subject type, mode, criteria and
requested fields (allowed, not allowed, nested, unknown, none), follow-up and confirmation, case
reference, seriousness, provider status and times on and around each agreement's validity
edges, and a few malformed inputs.

Regenerate (only when a decision is *meant* to change, and review the diff)::

    .venv/bin/python tests/support/policy_golden.py

``tests/unit/test_policy_golden.py`` replays it.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from ibex.policy_bundle import ENTRYPOINT, PolicyBundle  # noqa: E402
from ibex.policy_engine import build_input, new_regorus_engine  # noqa: E402
from tests.support.policy_corpus import (  # noqa: E402
    MEMBERS,
    NOW,
    base_query,
    corpus,
    synthetic_members,
    synthetic_policies,
)

GOLDEN = ROOT / "tests" / "support" / "policy_golden.jsonl.gz"
SEED = 20261128
SHIPPED_RANDOM = 3000
SYNTHETIC_RANDOM = 2000
SYNTHETIC_COUNT = 1000

_JURISDICTIONS = ["CA", "US", "MX", "FR", "CA-BC", "CA-ON", "US-WA", "US-NY", "MX-CMX", "USA", ""]
_SERIOUSNESS = [None, "none", "minor", "serious", "very_serious", "grave"]
_CASE_REFERENCES = [None, "CASE-2026-0001", ""]


def _member_facts(member_id: str, rng: random.Random) -> dict[str, Any]:
    if member_id in MEMBERS:
        facts = copy.deepcopy(MEMBERS[member_id])
    else:  # a synthetic member acts in one of the demo federation's countries
        country = ["CA", "US", "MX"][int(member_id[-2:]) % 3]
        facts = {
            "id": member_id,
            "country": country,
            "agency_kind": "police",
            "jurisdictions": [country],
        }
    if rng.random() < 0.08:
        facts["jurisdictions"] = sorted({*facts["jurisdictions"], rng.choice(["CA", "US", "MX"])})
    return facts


def _ts(day: str, seconds: float) -> float:
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    return (start + timedelta(seconds=seconds)).timestamp()


def _times(agreement: Mapping[str, Any], rng: random.Random) -> float:
    """A time on or around the agreement's validity edges, or an ordinary day."""
    vf, vu = agreement["valid_from"], agreement["valid_until"]
    choices = [
        NOW,
        NOW,
        NOW,
        _ts(vf, 0),
        _ts(vf, 43200),
        _ts(vf, -0.001),
        _ts(vf, -86400 * 30),
        _ts(vu, 86399.999),
        _ts(vu, 43200),
        _ts(vu, 86400),
        _ts(vu, 86400 * 400),
        _ts("2023-06-01", rng.uniform(0, 86400 * 365 * 6)),
    ]
    return rng.choice(choices)


def _fields(bundle: PolicyBundle, subject: str) -> list[str]:
    return sorted(bundle.data["ibex_data"]["entities"].get(subject, {}))


def _subset(rng: random.Random, items: list[str], most: int = 5) -> list[str]:
    if not items:
        return []
    return sorted(rng.sample(items, rng.randint(0, min(most, len(items)))))


def random_input(
    bundle: PolicyBundle, rng: random.Random, members: list[str]
) -> tuple[str, dict[str, Any]]:
    """One randomised decision input and a short label saying what was varied."""
    data = bundle.data["ibex_data"]
    agreements = data["agreements"]
    taxonomy = bundle.taxonomy
    changed: list[str] = []
    if rng.random() < 0.06:  # a pair that may have no agreement at all
        provider, recipient = rng.sample(members, 2)
        agreement = agreements[rng.choice(sorted(agreements))]
        changed.append("pair")
    else:
        agreement = agreements[rng.choice(sorted(agreements))]
        provider, recipient = agreement["provider"], rng.choice(agreement["recipients"])
    requester = _member_facts(recipient, rng)
    target = _member_facts(provider, rng)
    query, _ = (
        base_query(agreement, recipient)
        if recipient in MEMBERS
        else _synthetic_base(agreement, recipient, requester)
    )
    query["requester"] = recipient
    subject = query["subject_type"]
    entity_fields = _fields(bundle, subject)

    def vary(name: str, p: float) -> bool:
        hit = rng.random() < p
        if hit:
            changed.append(name)
        return hit

    if vary("purpose", 0.3):
        query["purpose"] = rng.choice([*agreement["purposes"], *taxonomy["purposes"], "tourism"])
    if vary("legal_basis", 0.25):
        own = [lb["id"] for lb in agreement["legal_bases"]]
        query["legal_basis"] = rng.choice([*own, *own, *taxonomy["legal_bases"], "no_such_law"])
    if vary("jurisdiction", 0.25):
        query["jurisdiction"] = rng.choice([*agreement["jurisdictions"], *_JURISDICTIONS])
    if vary("subject", 0.2):
        subject = rng.choice([*agreement["subject_types"], *data["entities"], "spaceship"])
        query["subject_type"] = subject
        entity_fields = _fields(bundle, subject)
        criteria = agreement["criteria"].get(subject) or taxonomy["minimum_criteria"].get(
            subject, [["id"]]
        )
        query["criteria_fields"] = sorted(rng.choice(criteria))
        allowed = sorted(agreement["allowed"].get(query["purpose"], {}).get(subject, {}))
        query["requested_fields"] = _subset(rng, allowed or entity_fields)
    if vary("mode", 0.25):
        query["mode"] = rng.choice(["full", "hit_no_hit", "hit_no_hit", "everything"])
    if vary("criteria", 0.25):
        alternatives = agreement["criteria"].get(subject, [["name"]])
        pick = rng.random()
        if pick < 0.3:
            query["criteria_fields"] = sorted(rng.choice(alternatives)[:-1] or ["sex"])
        elif pick < 0.5:
            query["criteria_fields"] = sorted(
                f"{f}.{rng.choice(['surname', 'value', 'x'])}" for f in rng.choice(alternatives)
            )
        elif pick < 0.65:
            query["criteria_fields"] = _subset(rng, entity_fields, 4)
        elif pick < 0.75:
            query["criteria_fields"] = sorted({*rng.choice(alternatives), "star_sign"})
        elif pick < 0.85:
            query["criteria_fields"] = []
        else:
            query["criteria_fields"] = sorted(
                {f for alternative in alternatives for f in alternative}
            )
    if vary("requested", 0.35):
        allowed = sorted(agreement["allowed"].get(query["purpose"], {}).get(subject, {}))
        pick = rng.random()
        if pick < 0.25:
            query["requested_fields"] = []
        elif pick < 0.5:
            query["requested_fields"] = _subset(rng, entity_fields, 6)
        elif pick < 0.65:
            nested = [f for f in entity_fields if "." in f]
            query["requested_fields"] = _subset(rng, [*nested, *allowed], 4)
        elif pick < 0.75:
            query["requested_fields"] = sorted({*_subset(rng, allowed, 2), "shoe_size"})
        else:
            query["requested_fields"] = list(entity_fields)
    follow: dict[str, Any] | None = None
    if vary("follow_up", 0.25):
        follow = {"officer_confirmed": rng.random() < 0.7}
        if rng.random() < 0.85:
            query["criteria_fields"] = ["reference"]
    if follow is not None:
        query["follow_up"] = follow
    if vary("case_reference", 0.25):
        query["case_reference"] = rng.choice(_CASE_REFERENCES)
    if vary("seriousness", 0.25):
        query["seriousness"] = rng.choice(_SERIOUSNESS)
    query = {k: v for k, v in query.items() if v is not None}
    status = "active"
    if vary("status", 0.05):
        status = rng.choice(["suspended", "left", "pending"])
    target["status"] = status
    now = _times(agreement, rng) if vary("time", 0.4) else NOW
    inp = build_input(query, target, requester, now)
    if vary("malformed", 0.04):
        _break(inp, rng)
    return "+".join(changed) or "base", inp


def _synthetic_base(
    agreement: Mapping[str, Any], recipient: str, requester: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """base_query for a synthetic recipient: the requester acts where the agreement applies."""
    country = agreement["jurisdictions"][0].split("-")[0]
    requester["jurisdictions"] = sorted({*requester["jurisdictions"], country})
    requester["country"] = country
    saved = MEMBERS.get(recipient)
    MEMBERS[recipient] = requester
    try:
        return base_query(agreement, recipient)
    finally:
        if saved is None:
            del MEMBERS[recipient]


def _break(inp: dict[str, Any], rng: random.Random) -> None:
    """Make an input malformed in one of the ways the policy must refuse (input.invalid)."""
    how = rng.randrange(9)
    if how == 0:
        del inp["now"]
    elif how == 1:
        inp["now"] = "2026-11"
    elif how == 2:
        inp["query"]["follow_up"] = "yes"
    elif how == 3:
        inp["requester"] = dict(inp["provider"])
        inp["requester"].pop("status")
    elif how == 4:
        inp["query"]["requested_fields"] = "name"
    elif how == 5:
        del inp["query"]["purpose"]
    elif how == 6:
        inp["provider"]["id"] = "XX-NOBODY"
    elif how == 7:
        del inp["provider"]["status"]
    else:
        inp["requester"]["jurisdictions"] = None


def evaluate(engine: Any, inp: Mapping[str, Any]) -> Any:
    """The raw ``data.ibex.decision`` for one input, or ``{"error": ...}``."""
    try:
        engine.set_input(dict(inp))
        return engine.eval_rule(ENTRYPOINT)
    except Exception as exc:
        return {"error": type(exc).__name__}


def inputs_for(
    bundle: PolicyBundle, set_name: str, count: int, members: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The corpus, then ``count`` randomised inputs (seeded by the set's name)."""
    yield from corpus(bundle)
    rng = random.Random(f"{SEED}/{set_name}")
    for i in range(count):
        label, inp = random_input(bundle, rng, members)
        yield f"random/{i:05d}/{label}", inp


def sets(tmp: Path) -> Iterator[tuple[str, Path, int, list[str]]]:
    """(set name, policies directory, randomised inputs, members) for each golden set."""
    yield "shipped", ROOT / "policies", SHIPPED_RANDOM, sorted(MEMBERS)
    synthetic = synthetic_policies(tmp / "synthetic", SYNTHETIC_COUNT)
    yield "synthetic", synthetic, SYNTHETIC_RANDOM, [*sorted(MEMBERS), *synthetic_members()]


def read_golden(path: Path = GOLDEN) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, policies, count, members in sets(Path(tmp)):
            bundle = PolicyBundle.load(policies)
            engine = new_regorus_engine(bundle)
            for label, inp in inputs_for(bundle, set_name, count, members):
                decision = evaluate(engine, inp)
                lines.append(
                    json.dumps(
                        {"set": set_name, "label": label, "input": inp, "decision": decision},
                        sort_keys=True,
                        ensure_ascii=False,
                    )
                )
    # mtime=0: the same decisions give the same bytes.
    with (
        open(GOLDEN, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f,
    ):
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{GOLDEN.relative_to(ROOT)}: {len(lines)} decisions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
