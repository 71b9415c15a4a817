"""What the record store indexes for each entity type, and in which normalised form.

Identifier keys are ``(scheme, normalised value, country)``; the scheme names are the ones the
matcher's criteria use (:data:`connectors.matching.CRITERIA_FIELDS`). Country is the empty string
where the identifier is unique without one (VIN, IMO, MMSI, container number ...).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from connectors.normalise import (
    blocking_keys,
    compose_name,
    fold,
    index_forms,
    is_abjad,
    normalise_country,
    normalise_identifier,
)

IdentKey = tuple[str, str, str]

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


class NameEntry(NamedTuple):
    """One indexed name of a person (the primary name or an alias)."""

    folded: str
    ascii: str
    surname: str
    dob: str
    year: int  # 0 when unknown
    md: int  # month * 100 + day; 0 when unknown, month * 100 when only the month is known
    keys: tuple[str, ...]


def name_entries(entity_type: str, body: dict[str, Any]) -> list[NameEntry]:
    """The name index rows of a (valid) person record; other entity types have none."""
    if entity_type != "person":
        return []
    dob = body.get("date_of_birth") or ""
    year = int(dob[:4]) if dob else 0
    md = int(dob[5:7]) * 100 + (int(dob[8:10]) if len(dob) >= 10 else 0) if len(dob) >= 7 else 0
    out: list[NameEntry] = []
    seen: set[tuple[str, str]] = set()
    for name in (body.get("name"), *(body.get("aliases") or ())):
        if not isinstance(name, dict):
            continue
        surname = name.get("surname")
        text = compose_name(name.get("given_names"), surname, name.get("full_name"))
        folded, ascii_form = index_forms(text)
        folded_surname = fold(surname) if surname else ""
        if not ascii_form or (folded, folded_surname) in seen:
            continue
        seen.add((folded, folded_surname))
        keys = tuple(sorted(blocking_keys(ascii_form, abjad=is_abjad(text))))
        out.append(NameEntry(folded, ascii_form, folded_surname, dob, year, md, keys))
    return out
