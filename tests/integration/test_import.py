"""Importing CSV, JSON and NDJSON files: mappings, all-or-nothing, re-import, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors.importer import import_file
from connectors.mapping import load_mapping
from connectors.records import RecordStore
from ibex.cli import main
from ibex.errors import BadInput
from ibex.store import generate_db_key_file, load_db_key

EXAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "examples"


def person(source_id: str, surname: str = "Ivanova", **extra: Any) -> dict[str, Any]:
    return {
        "record": {"source_id": source_id, "handling": "H1"},
        "name": {"given_names": "Anna", "surname": surname},
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with RecordStore.create(tmp_path / "records.db", os.urandom(32)) as s:
        yield s


def write_ndjson(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_json_and_ndjson(store: RecordStore, tmp_path: Path) -> None:
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps([person("J1"), person("J2")]))
    report = import_file(store, doc, "person")
    assert report.accepted and (report.rows, report.inserted) == (2, 2)
    nd = write_ndjson(tmp_path / "p.ndjson", [person("N1"), person("J1", surname="Changed")])
    report = import_file(store, nd, "person")
    assert (report.inserted, report.updated) == (1, 1)
    stored = store.get("person", "J1")
    assert stored is not None and stored.body["name"]["surname"] == "Changed"
    assert store.count("person") == 3


def test_csv_without_mapping_uses_dotted_headers(store: RecordStore, tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text(
        "record.source_id,record.handling,name.surname,date_of_birth,nationalities.0\n"
        "C1,H0,Smith,1980-03-07,CAN\n"
        "\n"
        "C2,H0,Jones,,\n"
    )
    report = import_file(store, src, "person")
    assert report.accepted, report.to_text()
    assert report.rows == 2
    stored = store.get("person", "C2")
    assert stored is not None and "date_of_birth" not in stored.body  # empty cell = absent


def test_csv_with_the_example_mapping(store: RecordStore) -> None:
    mapping = load_mapping(EXAMPLES / "cbsa_person_mapping.yaml")
    report = import_file(store, EXAMPLES / "cbsa_persons.csv", "person", mapping=mapping)
    assert report.accepted, report.to_text()
    assert store.count("person") == 5
    stored = store.get("person", "CBSA-000104")
    assert stored is not None
    assert stored.body["nationalities"] == ["DEU", "AUT"]
    assert stored.body["record"] == {
        "source_id": "CBSA-000104",
        "handling": "H2",
        "updated_at": "2026-01-18T09:15:00Z",
    }


def test_one_bad_row_changes_nothing(store: RecordStore, tmp_path: Path) -> None:
    store.put_many("person", [person("KEEP", surname="Original")])
    rows = [
        person("KEEP", surname="Overwritten"),
        person("NEW1"),
        {**person("BAD1"), "date_of_birth": "1980-02-30"},
        {**person("BAD2"), "shoe_size": 44},
        person("NEW1"),
    ]
    report = import_file(store, write_ndjson(tmp_path / "bad.ndjson", rows), "person")
    assert not report.accepted
    found = {(e.row, e.pointer) for e in report.errors}
    assert found == {(3, "/date_of_birth"), (4, "/shoe_size"), (5, "/record/source_id")}
    assert "row 2" in next(e.message for e in report.errors if e.row == 5)
    assert "1980-02-30" not in report.to_text() and "44" not in report.to_text()
    assert (report.inserted, report.updated) == (0, 0)
    assert store.count() == 1
    kept = store.get("person", "KEEP")
    assert kept is not None and kept.body["name"]["surname"] == "Original"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.ndjson", "", "holds no records"),
        ("notarray.json", '{"a": 1}', "array of records"),
        ("broken.json", "[{", "not valid JSON"),
        ("line.ndjson", '{"a": 1}\n[1]\n{bad\n', "not a JSON object"),
        ("cells.csv", "name.surname,x\nA\n", "cells"),
        ("header.csv", "a,a\n1,2\n", "repeated column"),
        ("latin1.csv", b"name.surname\n\xe9\n", "UTF-8"),
    ],
)
def test_malformed_files_are_rejected(
    store: RecordStore, tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    report = import_file(store, path, "person")
    assert not report.accepted
    assert any(message in e.message for e in report.errors), report.to_text()
    assert store.count() == 0


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("a,a.0", "column 'a' is a value, but 'a.0' is inside it"),
        ("name,name.surname", "column 'name' is a value, but 'name.surname' is inside it"),
        ("name.surname,name", "column 'name' is a value, but 'name.surname' is inside it"),
        ("aliases.0,aliases.surname", "make 'aliases' both an array and an object"),
        ("a.0,a.b.c", "make 'a' both an array and an object"),  # the shaper used to raise here
        ("a.b,a.1", "make 'a' both an array and an object"),
        ("nationalities.0,nationalities.00", "name the same field"),
    ],
)
@pytest.mark.parametrize("workers", [0, None])
def test_a_header_with_contradicting_paths_is_reported(
    store: RecordStore, tmp_path: Path, header: str, message: str, workers: int | None
) -> None:
    """Two columns that cannot both hold a value are one clear problem with the file, not an
    exception nor a row that quietly loses one of the two cells."""
    src = tmp_path / "p.csv"
    src.write_text(f"record.source_id,record.handling,{header}\nC1,H1,x,y\n")
    report = import_file(store, src, "person", workers=workers)
    assert [(e.row, e.pointer) for e in report.errors] == [(0, "")], report.to_text()
    assert message in report.errors[0].message
    assert "file: the header's" in report.to_text()
    assert store.count() == 0


def test_format_and_mapping_type_checks(store: RecordStore, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot tell the format"):
        import_file(store, tmp_path / "x.txt", "person")
    mapping = load_mapping(EXAMPLES / "cbsa_person_mapping.yaml")
    with pytest.raises(BadInput, match="for person records"):
        import_file(store, EXAMPLES / "cbsa_persons.csv", "vehicle", mapping=mapping)


def test_progress_bar(store: RecordStore, tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    rows = [person(f"R{i}") for i in range(50)]
    import_file(
        store,
        write_ndjson(tmp_path / "p.ndjson", rows),
        "person",
        progress=True,
        progress_stream=stream,
    )
    assert "100%" in stream.getvalue() and stream.getvalue().endswith("\n")


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key_file = generate_db_key_file(tmp_path / "keys" / "db.key")
    cfg = tmp_path / "connector.toml"
    cfg.write_text(
        'member_id = "CA-CBSA"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'keys_dir = "{tmp_path / "keys"}"\n'
        'broker_url = "http://127.0.0.1:8400"\n'
        f'db_key_file = "{key_file}"\n'
    )
    return cfg


def test_cli_import_exit_codes(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = EXAMPLES / "cbsa_persons.csv"
    mapping = EXAMPLES / "cbsa_person_mapping.yaml"
    args = ["connector", "import", "--config", str(config), str(src), "--type", "person"]
    assert main([*args, "--mapping", str(mapping)]) == 0
    assert "5 new" in capsys.readouterr().out
    db = tmp_path / "data" / "records.db"
    assert db.exists() and oct(db.parent.stat().st_mode & 0o777) == "0o700"

    # Without the mapping the local columns do not fit the schema: rejected, exit 1.
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "rejected" in err and "row 1: /CLIENT_NAME" in err
    assert "KOVALENKO" not in err

    assert main([*args, "--mapping", str(mapping), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["accepted"], out["updated"]) == (True, 5)

    key = load_db_key(tmp_path / "keys" / "db.key")
    with RecordStore.open(db, key) as store:
        assert store.count("person") == 5


def test_cli_usage_errors(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    assert (
        main(["connector", "import", "--config", str(config), str(missing), "--type", "person"])
        == 2
    )
    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("renmae: {}\n")
    src = tmp_path / "p.csv"
    shutil.copy(EXAMPLES / "cbsa_persons.csv", src)
    assert (
        main(
            [
                "connector",
                "import",
                "--config",
                str(config),
                str(src),
                "--type",
                "person",
                "--mapping",
                str(bad_mapping),
            ]
        )
        == 2
    )
    assert "unknown key 'renmae'" in capsys.readouterr().err
