"""Import throughput: person records per second through ``import_file`` into SQLCipher.

Baseline: the same code path and schema on a plain (unencrypted) sqlite3 file, so the ratio
shows what encryption costs. Synthetic persons come from name pools built once with Faker in
several locales (Faker itself takes ~50 µs per name, too slow to call a million times).

    .venv/bin/python bench/bench_import.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors import records as records_module
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


def run(rows: int) -> None:
    persons = synthetic_persons(rows)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "persons.csv"
        write_csv(src, persons)
        ndjson = Path(tmp) / "persons.ndjson"
        import json

        ndjson.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in persons) + "\n")
        results = {}
        for label, make in (
            ("sqlcipher", lambda p: RecordStore.create(p, os.urandom(32))),
            ("sqlite3", PlainStore.make),
        ):
            for fmt, file in (("csv", src), ("ndjson", ndjson)):
                db = Path(tmp) / f"{label}-{fmt}.db"
                store = make(db)
                t = time.perf_counter()
                report = import_file(store, file, "person", progress=False)
                elapsed = time.perf_counter() - t
                assert report.accepted, report.to_text()
                store.close()
                results[(label, fmt)] = rows / elapsed
                print(f"{label:10s} {fmt:7s} {rows:>9,} rows  {rows / elapsed:>10,.0f} records/s")
        for fmt in ("csv", "ndjson"):
            ratio = results[("sqlcipher", fmt)] / results[("sqlite3", fmt)]
            print(f"ratio sqlcipher/sqlite3 ({fmt}): {ratio:.2f}")
        print(f"target >= 20,000 person records/s: csv {results[('sqlcipher', 'csv')]:,.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=50_000)
    run(ap.parse_args().rows)
