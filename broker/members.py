"""The member registry and the broker-signed federation document.

Members (agencies) are kept in the broker's encrypted store. Every change bumps the federation
document's version and re-signs it, so connectors can tell a newer document from an older one and
refuse to go back. The registry also answers the broker's own trust questions: which key may sign
a query for which member, at which time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ibex.envelope import Envelope, TrustStore, sign
from ibex.errors import BadInput, NotFound, UnknownMember
from ibex.federation import build_trust
from ibex.jsonio import dumps, loads_strict
from ibex.keys import MemberKeys, PublicKeys, b64, check_member_id
from ibex.messages import (
    PT_BROKER_ANSWER,
    PT_FEDERATION,
    PT_PROVIDER_ANSWER,
    PT_QUERY,
    PT_ROUTED_QUERY,
    BrokerInfo,
    FederationDocument,
    Member,
    MemberKey,
    decode,
    encode,
)
from ibex.store import Connection
from ibex.timeutil import format_ts, now

AGENCY_KINDS = (
    "immigration",
    "customs",
    "border",
    "police",
    "coast_guard",
    "intelligence",
    "other",
)
MEMBER_PAYLOAD_TYPES = frozenset({PT_QUERY, PT_PROVIDER_ANSWER})
BROKER_PAYLOAD_TYPES = frozenset(
    {PT_ROUTED_QUERY, PT_BROKER_ANSWER, PT_FEDERATION, PT_PROVIDER_ANSWER}
)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS members (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS federation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    issued_at TEXT NOT NULL,
    envelope BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """What an operator registers for a member."""

    id: str
    name: str
    country: str
    agency_kind: str
    jurisdictions: tuple[str, ...]
    endpoint: str
    keys: PublicKeys
    schemas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    valid_from: float | None = None
    valid_until: float | None = None

    def check(self) -> None:
        check_member_id(self.id)
        if self.keys.member != self.id:
            raise BadInput(f"the public keys belong to {self.keys.member}, not {self.id}")
        if self.agency_kind not in AGENCY_KINDS:
            raise BadInput(f"agency kind must be one of {', '.join(AGENCY_KINDS)}")
        if not self.endpoint.startswith(("http://", "https://")):
            raise BadInput("a member endpoint is an http:// or https:// URL")


def member_keys(
    spec_keys: PublicKeys, valid_from: float, valid_until: float | None
) -> list[MemberKey]:
    until = format_ts(valid_until) if valid_until else None
    return [
        MemberKey(
            use="signing",
            algorithm="ed25519",
            public_key=b64(spec_keys.signing),
            keyid=spec_keys.signing_keyid,
            valid_from=format_ts(valid_from),
            valid_until=until,
        ),
        MemberKey(
            use="encryption",
            algorithm="x25519",
            public_key=b64(spec_keys.encryption),
            keyid=spec_keys.encryption_keyid,
            valid_from=format_ts(valid_from),
            valid_until=until,
        ),
    ]


class MemberRegistry:
    """Members in the broker store, and the signed federation document built from them."""

    def __init__(
        self,
        conn: Connection,
        broker_keys: MemberKeys,
        *,
        federation: str,
        endpoint: str,
    ) -> None:
        self._conn = conn
        self._keys = broker_keys
        self._federation = federation
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._cache_version = -1
        self._doc: FederationDocument | None = None
        self._envelope: Envelope | None = None
        self._trust: TrustStore | None = None
        self._conn.executescript(SCHEMA_SQL)
        if self._load_row() is None:
            self._publish(version=1)

    # --- reading ---------------------------------------------------------------------------

    def _load_row(self) -> tuple[int, bytes] | None:
        row = self._conn.execute("SELECT version, envelope FROM federation WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def _refresh(self) -> None:
        """Reload when another worker process published a newer version."""
        row = self._load_row()
        if row is None:
            raise NotFound("no federation document has been published")
        version, data = row
        if version == self._cache_version and self._doc is not None:
            return
        env = Envelope.parse(data)
        doc = FederationDocument.parse(env.payload)
        self._doc, self._envelope, self._cache_version = doc, env, version
        self._trust = build_trust(doc)

    def document(self) -> FederationDocument:
        with self._lock:
            self._refresh()
            assert self._doc is not None
            return self._doc

    def signed_document(self) -> Envelope:
        with self._lock:
            self._refresh()
            assert self._envelope is not None
            return self._envelope

    def trust(self) -> TrustStore:
        with self._lock:
            self._refresh()
            assert self._trust is not None
            return self._trust

    def get(self, member_id: str) -> Member:
        member = self.document().member(member_id)
        if member is None:
            raise UnknownMember(f"{member_id} is not a member of this federation")
        return member

    def active(self, member_id: str) -> Member:
        member = self.get(member_id)
        if member.status != "active":
            raise UnknownMember(f"{member_id} is suspended")
        return member

    def list(self) -> Sequence[Member]:
        return self.document().members

    # --- changing --------------------------------------------------------------------------

    def add(self, spec: MemberSpec) -> Member:
        spec.check()
        start = now() if spec.valid_from is None else spec.valid_from
        member = Member(
            id=spec.id,
            name=spec.name,
            country=spec.country,
            agency_kind=spec.agency_kind,
            jurisdictions=tuple(spec.jurisdictions),
            endpoint=spec.endpoint,
            status="active",
            keys=tuple(member_keys(spec.keys, start, spec.valid_until)),
            schemas={k: tuple(v) for k, v in spec.schemas.items()},
        )
        self._put(member)
        return member

    def set_status(self, member_id: str, status: str) -> Member:
        if status not in ("active", "suspended"):
            raise BadInput("status is active or suspended")
        member = self.get(member_id)
        changed = Member(**{**_fields(member), "status": status})
        self._put(changed)
        return changed

    def _put(self, member: Member) -> None:
        body = dumps(encode(member)).decode()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO members (id, body, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET body = excluded.body,"
                    " updated_at = excluded.updated_at",
                    (member.id, body, now()),
                )
                row = self._load_row()
                self._publish(version=(row[0] + 1) if row else 1, in_transaction=True)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._cache_version = -1

    def _publish(self, *, version: int, in_transaction: bool = False) -> None:
        members = [
            decode(Member, loads_strict(body))
            for (body,) in self._conn.execute("SELECT body FROM members ORDER BY id")
        ]
        doc = FederationDocument(
            v=1,
            federation=self._federation,
            version=version,
            issued_at=format_ts(now()),
            broker=BrokerInfo(
                id=self._keys.member,
                endpoint=self._endpoint,
                keys=(member_keys(self._keys.public, 0.0, None)[0],),
            ),
            members=tuple(members),
        )
        payload = doc.to_bytes()
        FederationDocument.parse(payload)
        env = sign(PT_FEDERATION, payload, self._keys.signing_key)
        sql = (
            "INSERT INTO federation (id, version, issued_at, envelope) VALUES (1, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET version = excluded.version,"
            " issued_at = excluded.issued_at, envelope = excluded.envelope"
        )
        self._conn.execute(sql, (version, doc.issued_at, env.to_bytes()))


def _fields(member: Member) -> dict[str, Any]:
    return {f: getattr(member, f) for f in Member.__dataclass_fields__}
