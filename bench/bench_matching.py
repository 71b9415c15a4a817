"""Matching latency: p50 / p99 per lookup at 100k and 1M persons in a SQLCipher store.

Two kinds of lookup, each 500 times against random stored persons:

* exact identifier: passport number + issuing country (target: under 2 ms);
* fuzzy name + date of birth: the stored name with one letter changed (a typo) and the exact
  date of birth (target: under 20 ms).

Persons come from Faker-built name pools in ten locales (see bench_import.synthetic_persons);
building a million with Faker itself would take most of an hour. Loading goes through the
store's normal validated transaction, so the build time is also an import figure.

    .venv/bin/python bench/bench_matching.py [--sizes 100000 1000000] [--queries 500]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import import synthetic_persons

from connectors.matching import Matcher
from connectors.records import RecordStore


def typo(text: str, rng: random.Random) -> str:
    """One letter replaced, not the first (a typical keying error)."""
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text))
    letters = "abcdefghijklmnopqrstuvwxyz"
    return text[:i] + rng.choice([c for c in letters if c != text[i].lower()]) + text[i + 1 :]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def run(size: int, queries: int) -> None:
    rng = random.Random(size)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        persons = synthetic_persons(size)
        gen = time.perf_counter() - t
        store = RecordStore.create(Path(tmp) / "records.db", os.urandom(32))
        t = time.perf_counter()
        chunk = 50_000
        for i in range(0, size, chunk):
            store.put_many("person", persons[i : i + chunk])
        load = time.perf_counter() - t
        megabytes = os.path.getsize(Path(tmp) / "records.db") / 1e6
        print(
            f"\n{size:,} persons: generated in {gen:.1f} s, stored in {load:.1f} s "
            f"({size / load:,.0f} records/s), file {megabytes:,.0f} MB"
        )
        matcher = Matcher(store, threshold=0.85)
        sample = [persons[rng.randrange(size)] for _ in range(queries)]

        def exact(p: dict[str, Any]) -> list[Any]:
            ident = p["identifiers"][0]
            return matcher.match(
                "person",
                {
                    "identifiers.value": ident["value"],
                    "identifiers.scheme": ident["scheme"],
                    "identifiers.issuing_country": ident["issuing_country"],
                },
            )

        def fuzzy(p: dict[str, Any]) -> list[Any]:
            return matcher.match(
                "person",
                {
                    "name.surname": typo(p["name"]["surname"], rng),
                    "name.given_names": p["name"]["given_names"],
                    "date_of_birth": p["date_of_birth"],
                },
            )

        for label, fn, target in (
            ("exact identifier", exact, 2.0),
            ("fuzzy name + dob", fuzzy, 20.0),
        ):
            for p in sample[:20]:
                fn(p)  # warm the page cache
            times, found, hits = [], 0, []
            for p in sample:
                t = time.perf_counter()
                result = fn(p)
                times.append((time.perf_counter() - t) * 1000)
                hits.append(len(result))
                found += any(h.source_id == p["record"]["source_id"] for h in result)
            p50, p99 = percentiles(times)
            print(
                f"  {label:18s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                f"(target < {target:g} ms: p50/target = {p50 / target:.2f})  "
                f"recall {found / len(sample):.1%}, median hits {statistics.median(hits):g}"
            )
        store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    for n in args.sizes:
        run(n, args.queries)
