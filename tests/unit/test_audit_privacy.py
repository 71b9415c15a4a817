"""Entries hold metadata only: criteria values and record contents never reach a leaf."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibex.auditentry import SCHEMA_ID, new_entry, validate_entry
from ibex.errors import SchemaValidationError
from ibex.schemas import registry
from tests.unit.test_auditlog import T0, open_log, sample_entry

# What an officer typed: the values the broker must never log.
CRITERIA = {
    "surname": "Zyxwvuts-Planted",
    "given_names": "Ådalbert Quinté",
    "birth_date": "1971-02-03",
    "document_number": "XK9081726",
    "plate": "PLNT 4242",
}
PLANTED = [v.encode() for v in CRITERIA.values()]


def maximal_entries() -> list[dict[str, Any]]:
    """One entry of every kind with every field the broker can fill from a query."""
    meta: dict[str, Any] = {
        "query_id": "123e4567-e89b-12d3-a456-426614174000",
        "requester": "CA-CBSA",
        "officer": "psn-1f2e3d",
        "purpose": "border_screening",
        "legal_basis": "ca.irpa.s8",
        "case_reference": "CBSA-2027-000123",
        "subject_type": "person",
        "criteria_fields": sorted(CRITERIA),  # the names of what was asked, never the values
        "requested_fields": ["surname", "nationality"],
        "mode": "full",
        "targets": ["US-CBP", "UK-HO"],
    }
    out = [new_entry("intake", retention_days=365, at=T0, **meta)]
    out.append(
        new_entry(
            "decision",
            retention_days=365,
            at=T0,
            **meta,
            target="US-CBP",
            decision={
                "allow": True,
                "mode": "full",
                "fields": ["surname"],
                "withheld": ["plate"],
                "agreement": "CA-US/2027-1",
                "rule_ids": ["purpose.allowed"],
                "policy_digest": "sha256:" + "cd" * 32,
            },
        )
    )
    out.append(
        new_entry(
            "disclosure",
            retention_days=365,
            at=T0,
            query_id=meta["query_id"],
            target="US-CBP",
            disclosure={
                "record_count": 2,
                "fields_released": ["surname"],
                "payload_digest": "sha256:" + "ef" * 32,
            },
        )
    )
    out.append(
        new_entry(
            "failure",
            retention_days=365,
            at=T0,
            query_id=meta["query_id"],
            target="UK-HO",
            error={"code": "target-timeout", "detail": "no answer within 5 s"},
        )
    )
    return out


def test_no_planted_value_reaches_any_leaf(tmp_path: Path) -> None:
    with open_log(tmp_path) as log:
        log.append_many(maximal_entries())
        leaves = [e.leaf or b"" for e in log.entries(0, log.size())]
    assert len(leaves) == 4
    for leaf in leaves:
        for value in PLANTED:
            assert value not in leaf
    # Nor in the file on disk (it is encrypted as a whole).
    raw = (tmp_path / "audit.db").read_bytes()
    assert not any(v in raw for v in PLANTED) and b"criteria_fields" not in raw


SMUGGLING: list[tuple[str, Any]] = [
    ("/criteria", {"surname": "Zyxwvuts-Planted"}),
    ("/criteria_fields", ["surname=Zyxwvuts-Planted"]),
    ("/criteria_fields", ["Zyxwvuts-Planted"]),
    ("/criteria_fields", ["1971-02-03"]),
    ("/requested_fields", ["PLNT 4242"]),
    ("/decision", {"allow": True, "values": {"surname": "Zyxwvuts-Planted"}}),
    ("/disclosure", {"record_count": 1, "records": [{"surname": "Zyxwvuts-Planted"}]}),
    ("/error", {"code": "no-match", "criteria": "XK9081726"}),
    ("/details", {"surname": "Ådalbert Quinté"}),
    ("/details", {"record": {"surname": "x"}}),
    ("/details", {"values": ["XK9081726"]}),
    ("/officer", "Ådalbert Quinté"),
    ("/case_reference", "PLNT 4242"),
    ("/subject_type", "Zyxwvuts-Planted"),
    ("/targets", ["PLNT 4242"]),
]


@pytest.mark.parametrize(("pointer", "value"), SMUGGLING)
def test_smuggled_values_are_refused_by_the_schema(pointer: str, value: Any) -> None:
    entry = sample_entry()
    entry[pointer.strip("/")] = value
    with pytest.raises(SchemaValidationError) as info:
        validate_entry(entry)
    assert all(e.pointer.startswith(pointer) for e in info.value.errors), info.value.errors
    assert not any("Planted" in e.message or "XK90" in e.message for e in info.value.errors)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 40000),
    st.floats(allow_nan=False, width=32),
    st.sampled_from(
        [
            "",
            "decision",
            "CA-CBSA",
            "surname",
            "Zyxwvuts Planted",
            "sha256:" + "a" * 64,
            "2027-01-01T00:00:00Z",
            "2027-02-30T00:00:00Z",
            "123e4567-e89b-12d3-a456-426614174000",
            "hit_no_hit",
            "x" * 400,
        ]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["allow", "mode", "fields", "code", "detail", "record_count", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)
KEYS = [
    "v",
    "kind",
    "time",
    "retention_days",
    "query_id",
    "requester",
    "officer",
    "purpose",
    "criteria_fields",
    "targets",
    "decision",
    "disclosure",
    "error",
    "details",
    "criteria",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), json_values), max_size=3), st.booleans())
def test_fast_path_never_accepts_what_jsonschema_refuses(
    edits: list[tuple[str, Any]], drop: bool
) -> None:
    entry = copy.deepcopy(maximal_entries()[1])
    for key, value in edits:
        entry[key] = value
    if drop:
        entry.pop("time", None)
    # The registry's fast path may only ever accept what jsonschema itself accepts.
    if registry().fast_accepts(entry, SCHEMA_ID):
        assert registry().full_is_valid(entry, SCHEMA_ID)
