"""The encrypted record store on real SQLCipher files: round trip, upsert, fail closed, at rest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from connectors.records import RecordStore
from ibex.errors import SchemaValidationError, StoreError, StoreKeyError, UnknownSchema

REPO = Path(__file__).resolve().parents[2]


def person(source_id: str, surname: str = "Ivanova", **extra: Any) -> dict[str, Any]:
    return {
        "record": {"source_id": source_id, "handling": "H2"},
        "name": {"given_names": "Anna", "surname": surname},
        **extra,
    }


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


def test_round_trip_and_metadata(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "records.db"
    with RecordStore.create(db, key) as store:
        store.put_many("person", [person("P1", date_of_birth="1980-03-07")])
        stored = store.get("person", "P1")
        assert stored is not None
        assert (stored.source_id, stored.handling) == ("P1", "H2")
        assert stored.updated_at.endswith("Z")  # filled in at import time
        assert stored.body["record"]["updated_at"] == stored.updated_at
        assert store.get("person", "nope") is None and store.get("vehicle", "P1") is None
    with RecordStore.open(db, key) as store:
        assert store.count() == store.count("person") == 1
        assert store.get("person", "P1") == stored


def test_upsert_replaces_the_record_and_its_index_rows(tmp_path: Path, key: bytes) -> None:
    with RecordStore.create(tmp_path / "r.db", key) as store:
        first = person("P1", identifiers=[{"scheme": "passport", "value": "OLD1"}])
        store.put_many("person", [first])
        second = {
            **person("P1", surname="Petrova"),
            "record": {"source_id": "P1", "handling": "H3", "updated_at": "2026-02-01T00:00:00Z"},
            "identifiers": [{"scheme": "passport", "value": "NEW1"}],
        }
        store.put_many("person", [second])
        stored = store.get("person", "P1")
        assert stored is not None and stored.handling == "H3"
        assert stored.body["name"]["surname"] == "Petrova"
        assert store.count() == 1
        assert store.find_exact("person", ["passport"], "OLD1") == []
        assert len(store.find_exact("person", ["passport"], "NEW1")) == 1
        names = store.candidates_by_name(["p:PTRF", "p:IFNF"], None, 10)
        assert [n.surname for n in names] == ["petrova"]


def test_invalid_records_store_nothing(tmp_path: Path, key: bytes) -> None:
    with RecordStore.create(tmp_path / "r.db", key) as store:
        no_handling = {"record": {"source_id": "P3"}, "name": {"surname": "X"}}
        with pytest.raises(SchemaValidationError) as exc:
            store.put_many("person", [person("P1"), {"name": {}}, no_handling, person("P1")])
        pointers = [e.pointer for e in exc.value.errors]
        assert "/1/name" in pointers
        assert "/2/record/handling" in pointers
        assert "/3/record/source_id" in pointers  # repeated within one batch
        assert store.count() == 0
        with pytest.raises(UnknownSchema):
            store.put_many("spaceship", [person("P1")])


def test_wrong_key_missing_file_and_plain_sqlite_fail_closed(tmp_path: Path, key: bytes) -> None:
    db = tmp_path / "r.db"
    RecordStore.create(db, key).close()
    with pytest.raises(StoreKeyError):
        RecordStore.open(db, os.urandom(32))
    with pytest.raises(StoreError):
        RecordStore.open(tmp_path / "missing.db", key)
    with pytest.raises(StoreError):
        RecordStore.create(db, key)  # never over an existing file
    import sqlite3

    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError):
        RecordStore.open(plain, key)


PLANTED_NAME = "Zyxwvutsqrponmlk"
PLANTED_DOC = "QZ9988776655"

_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from connectors.records import RecordStore
    from connectors.matching import Matcher

    db, name, doc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    key = bytes.fromhex(os.environ["TEST_DB_KEY"])
    filler = [
        {"record": {"source_id": f"F{i}", "handling": "H1"},
         "name": {"given_names": f"Given{i}", "surname": f"Filler{i % 97}"},
         "date_of_birth": f"{1950 + i % 50}-01-01"}
        for i in range(3000)
    ]
    planted = {"record": {"source_id": "SECRET", "handling": "H3"},
               "name": {"given_names": name, "surname": name},
               "identifiers": [{"scheme": "passport", "value": doc, "issuing_country": "CAN"}]}
    store = RecordStore.create(db, key)
    store.put_many("person", [*filler, planted])
    store.put_many("person", [planted])  # an update too
    hits = Matcher(store).match("person", {"name.surname": name, "name.given_names": name})
    assert hits and hits[0].source_id == "SECRET"
    by_document = {"identifiers.value": doc, "identifiers.scheme": "passport",
                   "identifiers.issuing_country": "CAN"}
    assert Matcher(store).match("person", by_document)
    # A sorting query over everything: would spill to a temp file if temp_store allowed it.
    store._conn().execute("SELECT body FROM records ORDER BY body DESC").fetchall()
    store.close()
    """
)


def _needles() -> list[bytes]:
    out = []
    for text in (PLANTED_NAME, PLANTED_NAME.lower(), PLANTED_NAME.upper(), PLANTED_DOC):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            out.append(text.encode(encoding))
    return out


def test_at_rest_planted_values_are_in_no_file(tmp_path: Path, key: bytes) -> None:
    data = tmp_path / "data"
    tmpdir = tmp_path / "tmp"
    data.mkdir()
    tmpdir.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "SQLITE_TMPDIR": str(tmpdir),
        "TEST_DB_KEY": key.hex(),
        "PYTHONPATH": str(REPO),
    }
    subprocess.run(
        [sys.executable, "-c", _WRITER, str(data / "records.db"), PLANTED_NAME, PLANTED_DOC],
        env=env,
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    files = [p for p in (*data.rglob("*"), *tmpdir.rglob("*")) if p.is_file()]
    assert data / "records.db" in files
    assert (data / "records.db").stat().st_size > 100_000  # the records really are in there
    needles = _needles()
    for path in files:
        raw = path.read_bytes()
        for needle in needles:
            assert needle not in raw, f"planted bytes found in {path.name}"
    # And the store still opens with the right key, and finds the planted record.
    with RecordStore.open(data / "records.db", key) as store:
        stored = store.get("person", "SECRET")
        assert stored is not None and stored.body["name"]["surname"] == PLANTED_NAME
