"""``ibex schema check OLD NEW``: compatible (minor) or breaking (major), every reason pointed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ibex.cli import main
from ibex.schema_compat import check_paths

ROOT = Path(__file__).resolve().parents[2]
PERSON = ROOT / "schemas" / "entities" / "person.schema.json"


def person() -> dict[str, Any]:
    return dict(json.loads(PERSON.read_text()))


def bump(doc: dict[str, Any], version: str) -> dict[str, Any]:
    doc["$id"] = doc["$id"].rsplit("/", 1)[0] + "/" + version
    doc["x-ibex-version"] = version
    return doc


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def reasons(tmp_path: Path, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    result = check_paths(PERSON, write(tmp_path, "new.schema.json", new))
    [change] = result.changes
    return [(r.level, r.pointer, r.message) for r in change.reasons if r.level != "none"]


def test_identical_is_no_change(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "check", str(ROOT / "schemas"), str(ROOT / "schemas")]) == 0
    assert "verdict: compatible" in capsys.readouterr().out


def test_added_optional_property_is_minor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = bump(person(), "1.1")
    new["properties"]["eye_colour"] = {"type": "string", "maxLength": 20}
    assert reasons(tmp_path, new) == [
        ("minor", "/properties/eye_colour", "optional property eye_colour added")
    ]
    path = write(tmp_path, "n.schema.json", new)
    assert main(["schema", "check", str(PERSON), str(path)]) == 0
    assert "compatible (minor)" in capsys.readouterr().out


def test_annotations_change_nothing(tmp_path: Path) -> None:
    new = person()
    new["description"] = "Reworded."
    new["properties"]["sex"]["x-ibex-sensitivity"] = "high"
    result = check_paths(PERSON, write(tmp_path, "n.schema.json", new))
    assert result.level == "none" and result.versions_ok


@pytest.mark.parametrize(
    ("change", "pointer", "words"),
    [
        (lambda d: d["properties"].pop("aliases"), "/properties/aliases", "removed"),
        (
            lambda d: (
                d["properties"].__setitem__("eye_colour", {"type": "string"})
                or d["required"].append("eye_colour")
            ),
            "/properties/eye_colour",
            "new required property",
        ),
        (lambda d: d["required"].append("sex"), "/required", "sex became required"),
        (
            lambda d: d["properties"]["sex"].__setitem__("enum", ["F", "M"]),
            "/properties/sex/enum",
            "enum narrowed",
        ),
        (
            lambda d: d["properties"]["sex"].__setitem__("enum", ["F", "M", "X", "U", "N"]),
            "/properties/sex/enum",
            "enum widened",
        ),
        (
            lambda d: d["properties"]["sex"].__setitem__("type", ["string", "null"]),
            "/properties/sex/type",
            "type widened",
        ),
        (
            lambda d: d["properties"]["place_of_birth"]["properties"]["city"].__setitem__(
                "maxLength", 100
            ),
            "/properties/place_of_birth/properties/city/maxLength",
            "maxLength narrowed: 200 -> 100",
        ),
        (
            lambda d: d["properties"]["place_of_birth"]["properties"]["city"].__setitem__(
                "pattern", "^[A-Z]"
            ),
            "/properties/place_of_birth/properties/city/pattern",
            "added (narrows)",
        ),
        (
            lambda d: d["properties"]["place_of_birth"]["properties"]["city"].__setitem__(
                "format", "date"
            ),
            "/properties/place_of_birth/properties/city/format",
            "added (narrows)",
        ),
        (
            lambda d: d.__setitem__("additionalProperties", True),
            "/additionalProperties",
            "false -> true",
        ),
        (
            lambda d: d["properties"]["name"].__setitem__(
                "$ref", "https://ibex.example/schemas/entities/common/1.0#/$defs/partial_date"
            ),
            "/properties/name/$ref",
            "$ref target changed",
        ),
    ],
)
def test_breaking_changes_are_major(tmp_path: Path, change: Any, pointer: str, words: str) -> None:
    new = bump(person(), "2.0")
    change(new)
    found = reasons(tmp_path, new)
    assert any(level == "major" and p == pointer and words in m for level, p, m in found), found


def test_additional_properties_true_to_false(tmp_path: Path) -> None:
    old = person()
    old["properties"]["place_of_birth"]["additionalProperties"] = True
    new = bump(copy.deepcopy(old), "2.0")
    new["properties"]["place_of_birth"]["additionalProperties"] = False
    result = check_paths(write(tmp_path, "o.schema.json", old), write(tmp_path, "n.json", new))
    [r] = [r for r in result.changes[0].reasons if r.level == "major"]
    assert r.pointer == "/properties/place_of_birth/additionalProperties"
    assert "true -> false" in r.message


def test_every_reason_is_listed_and_exit_is_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = bump(person(), "2.0")
    new["properties"].pop("aliases")
    new["required"].append("sex")
    new["properties"]["eye_colour"] = {"type": "string"}
    path = write(tmp_path, "n.schema.json", new)
    assert main(["schema", "check", str(PERSON), str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["breaking"] is True and out["versions_ok"] is True
    pointers = {r["pointer"] for r in out["schemas"][0]["reasons"]}
    assert {"/properties/aliases", "/required", "/properties/eye_colour"} <= pointers


def test_version_bump_must_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    breaking = bump(person(), "1.1")  # a breaking change under a minor bump
    breaking["properties"].pop("aliases")
    path = write(tmp_path, "b.schema.json", breaking)
    assert main(["schema", "check", str(PERSON), str(path)]) == 1
    assert "needs a new major version (at least 2.0)" in capsys.readouterr().out
    compatible = person()  # a compatible change without a bump
    compatible["properties"]["eye_colour"] = {"type": "string"}
    result = check_paths(PERSON, write(tmp_path, "c.schema.json", compatible))
    assert result.level == "minor" and not result.versions_ok
    path = write(tmp_path, "c2.schema.json", compatible)
    assert main(["schema", "check", str(PERSON), str(path)]) == 1


def test_directories_compare_by_id(tmp_path: Path) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    write(old_dir, "person.schema.json", person())
    vessel = json.loads((ROOT / "schemas" / "entities" / "vessel.schema.json").read_text())
    write(old_dir, "vessel.schema.json", vessel)
    new = bump(person(), "1.1")
    new["properties"]["eye_colour"] = {"type": "string"}
    write(new_dir, "person.schema.json", new)
    result = check_paths(old_dir, new_dir)
    by_name = {c.schema: c for c in result.changes}
    assert by_name["entities/person"].level == "minor"
    assert by_name["entities/vessel"].level == "major"  # removed from NEW
    assert result.breaking


def test_a_file_without_a_versioned_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.schema.json", {"type": "object"})
    assert main(["schema", "check", str(PERSON), str(path)]) == 2
