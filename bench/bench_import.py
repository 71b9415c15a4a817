"""Import throughput: person records per second through ``import_file`` into SQLCipher.

The headline is the import as ``ibex connector import`` runs it: past its first rows, worker
processes map, validate and index while the importing process reads and writes (as many as
:func:`connectors._parallel.worker_count` allows here). Beside it, the same import in one
process (``workers=0``), and that on a plain (unencrypted) sqlite3 file: the ratio of the two
shows what encryption costs. Each figure is the median of ``--repeat`` runs, taken in turn so
that a busy neighbour slows every variant alike; where /proc/stat exists, the CPU the rest of
the machine used meanwhile is printed too. Synthetic persons come from name pools built once
with Faker in several locales (Faker itself takes ~50 µs per name, too slow to call a million
times).

    .venv/bin/python bench/bench_import.py [--rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors import records as records_module
from connectors._parallel import worker_count
from connectors.importer import import_file
from connectors.records import RecordStore

LOCALES = ("en_US", "fr_FR", "de_DE", "es_ES", "ru_RU", "ar_AA", "zh_CN", "pl_PL", "tr_TR", "vi_VN")
COUNTRIES = ("CAN", "USA", "FRA", "DEU", "ESP", "RUS", "JOR", "CHN", "POL", "TUR", "VNM")


def name_pools(per_locale: int = 400, seed: int = 7) -> list[tuple[list[str], list[str], str]]:
    """(given names, surnames, country) per locale, from Faker."""
    from faker import Faker

    pools = []
    for locale, country in zip(LOCALES, COUNTRIES, strict=False):
        fake = Faker(locale)
        fake.seed_instance(seed)
        given = list({fake.first_name() for _ in range(per_locale)})
        last = list({fake.last_name() for _ in range(per_locale)})
        pools.append((given, last, country))
    return pools


def synthetic_persons(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` valid person records with unique source ids, passports and national ids."""
    rng = random.Random(seed)
    pools = name_pools()
    out = []
    for i in range(n):
        given, last, country = pools[rng.randrange(len(pools))]
        year, month, day = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
        out.append(
            {
                "record": {"source_id": f"P{i:08d}", "handling": "H2"},
                "name": {"given_names": rng.choice(given), "surname": rng.choice(last)},
                "date_of_birth": f"{year:04d}-{month:02d}-{day:02d}",
                "sex": rng.choice("FM"),
                "nationalities": [country],
                "identifiers": [
                    {"scheme": "passport", "value": f"X{i:09d}", "issuing_country": country}
                ],
            }
        )
    return out


def write_csv(path: Path, persons: list[dict[str, Any]]) -> None:
    header = [
        "record.source_id",
        "record.handling",
        "name.given_names",
        "name.surname",
        "date_of_birth",
        "sex",
        "nationalities.0",
        "identifiers.0.scheme",
        "identifiers.0.value",
        "identifiers.0.issuing_country",
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for p in persons:
            ident = p["identifiers"][0]
            w.writerow(
                [
                    p["record"]["source_id"],
                    p["record"]["handling"],
                    p["name"]["given_names"],
                    p["name"]["surname"],
                    p["date_of_birth"],
                    p["sex"],
                    p["nationalities"][0],
                    ident["scheme"],
                    ident["value"],
                    ident["issuing_country"],
                ]
            )


class PlainStore(RecordStore):
    """The same store on plain sqlite3 (the baseline: what would it cost unencrypted?)."""

    def _connect(self, *, verify_integrity: bool = False) -> Any:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA temp_store = MEMORY")
        self._local.conn = conn
        self._conns.append(conn)
        return conn

    @classmethod
    def make(cls, path: Path) -> PlainStore:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(records_module._SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('layout', ?)", (records_module.LAYOUT_VERSION,))
        conn.close()
        return cls(path, b"")


def _busy_cores() -> float | None:
    """CPU seconds the whole machine has used so far (all cores), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def _own_cpu() -> float:
    return sum(os.times()[:4])  # this process and its (finished) workers


def run(rows: int, repeat: int) -> None:
    persons = synthetic_persons(rows)
    workers = worker_count(None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "persons.csv"
        write_csv(src, persons)
        ndjson = Path(tmp) / "persons.ndjson"
        ndjson.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in persons) + "\n")
        variants = (
            ("sqlcipher", None, lambda p: RecordStore.create(p, os.urandom(32))),
            ("sqlcipher", 0, lambda p: RecordStore.create(p, os.urandom(32))),
            ("sqlite3", 0, PlainStore.make),
        )
        rates: dict[tuple[str, int | None, str], list[float]] = {}
        neighbour: list[float] = []
        for attempt in range(repeat):
            for label, count, make in variants:
                for fmt, file in (("csv", src), ("ndjson", ndjson)):
                    db = Path(tmp) / f"{label}-{count}-{fmt}-{attempt}.db"
                    store = make(db)
                    busy, own = _busy_cores(), _own_cpu()
                    t = time.perf_counter()
                    report = import_file(store, file, "person", progress=False, workers=count)
                    elapsed = time.perf_counter() - t
                    assert report.accepted, report.to_text()
                    if busy is not None:
                        others = (_busy_cores() or 0.0) - busy - (_own_cpu() - own)
                        neighbour.append(max(others, 0.0) / elapsed)
                    store.close()
                    db.unlink()
                    rates.setdefault((label, count, fmt), []).append(rows / elapsed)
        rate = {key: statistics.median(values) for key, values in rates.items()}
        for fmt in ("csv", "ndjson"):
            print(
                f"sqlcipher  {fmt:7s} {rows:>9,} rows  {rate[('sqlcipher', None, fmt)]:>10,.0f}"
                f" records/s  ({workers} worker processes; median of {repeat})"
            )
        print("in one process (workers=0), and on plain sqlite3 for what encryption costs:")
        for label in ("sqlcipher", "sqlite3"):
            for fmt in ("csv", "ndjson"):
                print(
                    f"  {label:10s} {fmt:7s} {rows:>9,} rows"
                    f"  {rate[(label, 0, fmt)]:>10,.0f} records/s"
                )
        for fmt in ("csv", "ndjson"):
            ratio = rate[("sqlcipher", 0, fmt)] / rate[("sqlite3", 0, fmt)]
            print(f"ratio sqlcipher/sqlite3 ({fmt}): {ratio:.2f}")  # bench/report.py reads this
        for fmt in ("csv", "ndjson"):
            ratio = rate[("sqlcipher", None, fmt)] / rate[("sqlcipher", 0, fmt)]
            print(f"ratio workers/one process ({fmt}): {ratio:.2f}")
        if neighbour:
            print(
                f"CPUs: {os.cpu_count()}; other load on the machine meanwhile: median"
                f" {statistics.median(neighbour):.2f} cores, max {max(neighbour):.2f}"
            )
        print(
            f"target >= 20,000 person records/s: csv {rate[('sqlcipher', None, 'csv')]:,.0f},"
            f" ndjson {rate[('sqlcipher', None, 'ndjson')]:,.0f}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant (the median counts)")
    args = ap.parse_args()
    run(args.rows, args.repeat)
