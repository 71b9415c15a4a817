"""What the record store indexes for each entity type, and in which normalised form.

Identifier keys are ``(scheme, normalised value, country)``; the scheme names are the ones the
matcher's criteria use (:data:`connectors.matching.CRITERIA_FIELDS`). Country is the empty string
where the identifier is unique without one (VIN, IMO, MMSI, container number ...).
"""

from __future__ import annotations

import json
from typing import Any

from connectors.normalise import (
    blocking_keys,
    compose_name,
    fold,
    index_forms,
    is_abjad,
    name_part,
    normalise_country,
    normalise_identifier,
)

IdentKey = tuple[str, str, str]
# A names-table row without its record id and ordinal: folded, ascii, surname, dob, year, md and
# the blocking keys joined by tabs.
NameRow = tuple[str, str, str, str, int, int, str]
# A valid record ready to write: entity type, source id, handling, updated_at, the JSON body,
# its identifier keys and its name rows. A plain tuple rather than a class because import
# workers send it down a pipe, and a tuple of strings pickles several times faster.
Prepared = tuple[str, str, str, str, str, tuple[IdentKey, ...], tuple[NameRow, ...]]

# The body's stored form, as json.dumps(body, ensure_ascii=False, separators=(",", ":")) gives
# it, from one encoder (json.dumps with options builds an encoder per call, which costs as much
# as encoding a small record). No check for cycles: a body is a record that validated, and
# every entity schema closes its objects, so a cycle fails validation as too deeply nested
# (and were one to get here, encoding it would still raise, RecursionError for ValueError).
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":")).encode

# entity type -> (scheme, path to the value, path to the country or None)
IDENTIFIER_PATHS: dict[str, tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...]] = {
    "travel_document": (("document_number", ("document_number",), ("issuing_country",)),),
    "vehicle": (("vin", ("vin",), None), ("plate", ("plate",), ("plate_country",))),
    "vessel": (
        ("imo", ("imo",), None),
        ("mmsi", ("mmsi",), None),
        ("call_sign", ("call_sign",), None),
        ("name", ("name",), ("flag",)),
    ),
    "shipment": (
        ("container_number", ("container_number",), None),
        ("bill_of_lading", ("bill_of_lading",), None),
    ),
    "organisation": (
        ("registration_number", ("registration_number",), ("country",)),
        ("name", ("name",), ("country",)),
    ),
    "alert": (("alert_id", ("alert_id",), None),),
    "crossing": (
        ("crossing_id", ("crossing_id",), None),
        (
            "document_number",
            ("traveller", "document_number"),
            ("traveller", "document_country"),
        ),
        ("plate", ("conveyance", "vehicle_plate"), None),
        ("imo", ("conveyance", "vessel_imo"), None),
    ),
}


def _at(body: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def _key(scheme: str, value: object, country: object) -> IdentKey | None:
    if not isinstance(value, str):
        return None
    norm = normalise_identifier(scheme, value)
    if not norm:
        return None
    return (scheme, norm, normalise_country(country) if isinstance(country, str) else "")


def identifier_keys(entity_type: str, body: dict[str, Any]) -> list[IdentKey]:
    """Every exact-match key of a (valid) record."""
    keys: list[IdentKey | None] = []
    if entity_type == "person":
        for ident in body.get("identifiers") or ():
            keys.append(_key(ident["scheme"], ident["value"], ident.get("issuing_country")))
    for scheme, path, country_path in IDENTIFIER_PATHS.get(entity_type, ()):
        country = _at(body, country_path) if country_path else None
        keys.append(_key(scheme, _at(body, path), country))
    if entity_type == "organisation":
        keys.extend(_key("name", alias, body.get("country")) for alias in body.get("aliases") or ())
    return sorted({k for k in keys if k is not None})


def name_entries(entity_type: str, body: dict[str, Any]) -> list[NameRow]:
    """The name index rows of a (valid) person record (its primary name and its aliases, each
    once); other entity types have none."""
    if entity_type != "person":
        return []
    dob = body.get("date_of_birth") or ""
    year = int(dob[:4]) if dob else 0  # 0 when unknown
    # month * 100 + day; 0 when unknown, month * 100 when only the month is known
    md = int(dob[5:7]) * 100 + (int(dob[8:10]) if len(dob) >= 10 else 0) if len(dob) >= 7 else 0
    out: list[NameRow] = []
    seen: set[tuple[str, str]] = set()
    for name in (body.get("name"), *(body.get("aliases") or ())):
        if not isinstance(name, dict):
            continue
        forms = _joined_forms(name) or _whole_forms(name)
        if forms is None:
            continue
        folded, ascii_form, keys = forms
        surname = name.get("surname")
        folded_surname = fold(surname) if surname else ""
        if (folded, folded_surname) in seen:
            continue
        seen.add((folded, folded_surname))
        out.append((folded, ascii_form, folded_surname, dob, year, md, keys))
    return out


_Forms = tuple[str, str, str]  # folded, ASCII, the sorted blocking keys joined by tabs


def _whole_forms(name: dict[str, Any]) -> _Forms | None:
    """The forms of a name, worked out from its whole text (the reference for the below)."""
    text = compose_name(name.get("given_names"), name.get("surname"), name.get("full_name"))
    folded, ascii_form = index_forms(text)
    if not ascii_form:
        return None
    return folded, ascii_form, "\t".join(sorted(blocking_keys(ascii_form, abjad=is_abjad(text))))


def _joined_forms(name: dict[str, Any]) -> _Forms | None:
    """The same forms put together from the name's fields' cached forms (:func:`name_part`),
    or None where only the whole text can tell (Han or Hangul; no ASCII reading at all). The
    import indexes every name, and given names and surnames recur: this is its hot path."""
    full = name.get("full_name")
    if full:
        given, surname = full, None
    else:
        given, surname = name.get("given_names"), name.get("surname")
        if not given:
            given, surname = surname, None
    if type(given) is not str:
        return None
    first = name_part(given)
    if first is None:
        return None
    if not surname:
        if not first.ascii:
            return None
        keys = first.long_keys or first.all_keys
        if first.abjad:
            keys = keys | first.skeleton_keys
        return first.folded, first.ascii, "\t".join(sorted(keys))
    second = name_part(surname) if type(surname) is str else None
    if second is None:
        return None
    if first.ascii and second.ascii:
        ascii_form = first.ascii + " " + second.ascii
    else:
        ascii_form = first.ascii or second.ascii
        if not ascii_form:
            return None
    if first.folded and second.folded:
        folded = first.folded + " " + second.folded
    else:
        folded = first.folded or second.folded
    if first.long_keys or second.long_keys:
        keys = first.long_keys | second.long_keys
    else:
        keys = first.all_keys | second.all_keys
    if first.abjad or second.abjad:
        keys = keys | first.skeleton_keys | second.skeleton_keys
    return folded, ascii_form, "\t".join(sorted(keys))


def prepare_index(entity_type: str, record: dict[str, Any], updated_at: str) -> Prepared:
    """A valid ``record`` as it will be written: its body (with ``updated_at`` filled in when
    the record has none) as compact JSON, and its index rows."""
    meta = dict(record["record"])
    meta.setdefault("updated_at", updated_at)
    body = {**record, "record": meta}
    return (
        entity_type,
        meta["source_id"],
        meta["handling"],
        meta["updated_at"],
        _ENCODE(body),
        tuple(identifier_keys(entity_type, body)),
        tuple(name_entries(entity_type, body)),
    )
