"""Real keys and real messages for tests: nothing here is a mock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ibex.keys import MemberKeys
from ibex.protocol import OutgoingQuery, build_query

PERSON_CRITERIA: dict[str, Any] = {
    "name.surname": "Ivanova",
    "name.given_names": "Maria",
    "date_of_birth": "1980-03-07",
}


def person_query(
    requester: MemberKeys,
    targets: Mapping[str, MemberKeys],
    *,
    criteria: Mapping[str, Any] | None = None,
    purpose: str = "border_screening",
    mode: str = "full",
    at: float | None = None,
    **kw: Any,
) -> OutgoingQuery:
    return build_query(
        requester,
        officer="officer-4711",
        purpose=purpose,
        legal_basis=kw.pop("legal_basis", "ca_customs_act_s107"),
        jurisdiction=kw.pop("jurisdiction", "CA"),
        subject_type="person",
        mode=mode,
        criteria=PERSON_CRITERIA if criteria is None else criteria,
        requested_fields=kw.pop("requested_fields", ["name", "nationalities"]),
        targets={m: bytes(k.encryption_key.public_key) for m, k in targets.items()},
        at=at,
        **kw,
    )
