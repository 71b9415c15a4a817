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

from nacl.signing import SigningKey

from ibex.envelope import Envelope, TrustStore, add_signature, sign
from ibex.errors import BadInput, ConfigError, NotFound, UnknownMember
from ibex.federation import build_trust
from ibex.jsonio import dumps, loads_strict
from ibex.keys import MemberKeys, PublicKeys, b64, check_member_id, key_id
from ibex.messages import (
    AGENCY_KINDS,
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
from ibex.timeutil import format_ts, now, parse_ts

DAY = 86400.0
MAX_MEMBER_KEYS = 16  # messages/federation: a member lists at most 16 keys
MAX_BROKER_KEYS = 8
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
CREATE TABLE IF NOT EXISTS broker_keys (
    keyid TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS federation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    issued_at TEXT NOT NULL,
    envelope BLOB NOT NULL
);
-- Every document ever published, by version: a decision's audit entries name the version it
-- was made under, and a replay (ibex policy simulate) reads that version's member facts.
CREATE TABLE IF NOT EXISTS federation_history (
    version INTEGER PRIMARY KEY,
    issued_at TEXT NOT NULL,
    envelope BLOB NOT NULL
);
"""
_HISTORY_SQL = (
    "INSERT OR REPLACE INTO federation_history (version, issued_at, envelope) VALUES (?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class FederationView:
    """One published version of the federation: the document and the trust built from it.

    The broker takes one view per query and checks, decides, routes and verifies the whole
    query against it, so that one query never mixes two versions' members or keys, and its
    audit entries can name the version (``federation_version``)."""

    document: FederationDocument
    trust: TrustStore
    envelope: Envelope  # the document as the broker signed it

    @property
    def version(self) -> int:
        return self.document.version

    def get(self, member_id: str) -> Member:
        member = self.document.member(member_id)
        if member is None:
            raise UnknownMember(f"{member_id} is not a member of this federation")
        return member

    def active(self, member_id: str) -> Member:
        member = self.get(member_id)
        if member.status != "active":
            raise UnknownMember(f"{member_id} is suspended")
        return member


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
        previous_broker_keys: Sequence[SigningKey] = (),
    ) -> None:
        self._conn = conn
        self._keys = broker_keys
        # Retired broker keys still inside their overlap period also sign the document, so that
        # a connector that only knows the old key can verify it and learn the new one.
        self._previous = tuple(previous_broker_keys)
        self._federation = federation
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._view: FederationView | None = None  # None: read the store on the next request
        self._conn.executescript(SCHEMA_SQL)
        if self._load_row() is None:
            self._publish(version=1)
        self._keep_current()

    # --- reading ---------------------------------------------------------------------------

    def _load_row(self) -> tuple[int, bytes] | None:
        row = self._conn.execute("SELECT version, envelope FROM federation WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def _keep_current(self) -> None:
        """A store from before the history was kept starts it with its current document."""
        row = self._conn.execute(
            "SELECT f.version, f.issued_at, f.envelope FROM federation f"
            " LEFT JOIN federation_history h ON h.version = f.version"
            " WHERE f.id = 1 AND h.version IS NULL"
        ).fetchone()
        if row is not None:
            self._conn.execute(_HISTORY_SQL, (int(row[0]), row[1], bytes(row[2])))

    def _refresh(self) -> None:
        """Reload when another worker process published a newer version. Every request asks,
        several times: the version alone is read first, the document only when it changed."""
        if self._view is not None:
            row = self._conn.execute("SELECT version FROM federation WHERE id = 1").fetchone()
            if row is not None and int(row[0]) == self._view.version:
                return
        loaded = self._load_row()
        if loaded is None:
            raise NotFound("no federation document has been published")
        env = Envelope.parse(loaded[1])
        doc = FederationDocument.parse(env.payload)
        self._view = FederationView(doc, build_trust(doc), env)

    def view(self) -> FederationView:
        """The current version, whole: what one query is handled against."""
        with self._lock:
            self._refresh()
            assert self._view is not None
            return self._view

    def signed_document_at(self, version: int) -> Envelope | None:
        """The document published as ``version``, as it was signed, if this broker kept it."""
        with self._lock:
            row = self._conn.execute(
                "SELECT envelope FROM federation_history WHERE version = ?", (version,)
            ).fetchone()
        return None if row is None else Envelope.parse(bytes(row[0]))

    def document_at(self, version: int) -> FederationDocument | None:
        """The document published as ``version``, if this broker published and kept it."""
        env = self.signed_document_at(version)
        return None if env is None else FederationDocument.parse(env.payload)

    def document(self) -> FederationDocument:
        return self.view().document

    def signed_document(self) -> Envelope:
        return self.view().envelope

    def trust(self) -> TrustStore:
        return self.view().trust

    def get(self, member_id: str) -> Member:
        return self.view().get(member_id)

    def active(self, member_id: str) -> Member:
        return self.view().active(member_id)

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
        # Adding is for new members only: re-running `member add` must not silently replace the
        # keys of, or reactivate, an existing (perhaps suspended) member.
        self._put(member, new=True)
        return member

    def set_status(self, member_id: str, status: str) -> Member:
        if status not in ("active", "suspended"):
            raise BadInput("status is active or suspended")
        member = self.get(member_id)
        changed = Member(**{**_fields(member), "status": status})
        self._put(changed)
        return changed

    def _put(self, member: Member, *, new: bool = False) -> None:
        body = dumps(encode(member)).decode()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                exists = self._conn.execute(
                    "SELECT 1 FROM members WHERE id = ?", (member.id,)
                ).fetchone()
                self._conn.execute(
                    "INSERT INTO members (id, body, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET body = excluded.body,"
                    " updated_at = excluded.updated_at",
                    (member.id, body, now()),
                )
                row = self._load_row()
                self._publish(version=(row[0] + 1) if row else 1, in_transaction=True)
                # Checked after the document validated, so that a bad entry says what is bad.
                if new and exists:
                    raise BadInput(
                        f"{member.id} is already a member; change its keys with "
                        "`member rotate-key` and its status with `member suspend|activate`"
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._view = None

    def _publish(self, *, version: int, in_transaction: bool = False) -> None:
        members = [
            decode(Member, loads_strict(body))
            for (body,) in self._conn.execute("SELECT body FROM members ORDER BY id")
        ]
        broker_keys = self._broker_keys()
        listed = {k.keyid: k for k in broker_keys}
        if self._keys.signing_keyid not in listed:
            raise ConfigError(
                f"the broker key in keys_dir ({self._keys.signing_keyid}) is not one the "
                "federation document lists; rotate keys with `ibex broker rotate-key`"
            )
        doc = FederationDocument(
            v=1,
            federation=self._federation,
            version=version,
            issued_at=format_ts(now()),
            broker=BrokerInfo(id=self._keys.member, endpoint=self._endpoint, keys=broker_keys),
            members=tuple(members),
        )
        payload = doc.to_bytes()
        FederationDocument.parse(payload)
        env = sign(PT_FEDERATION, payload, self._keys.signing_key)
        at = now()
        for key in self._previous:
            listed_key = listed.get(key_id(bytes(key.verify_key)))
            if listed_key is not None and _usable(listed_key, at):
                env = add_signature(env, key)
        sql = (
            "INSERT INTO federation (id, version, issued_at, envelope) VALUES (1, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET version = excluded.version,"
            " issued_at = excluded.issued_at, envelope = excluded.envelope"
        )
        self._conn.execute(sql, (version, doc.issued_at, env.to_bytes()))
        self._conn.execute(_HISTORY_SQL, (version, doc.issued_at, env.to_bytes()))

    # --- key lifecycle ---------------------------------------------------------------------

    def _broker_keys(self) -> tuple[MemberKey, ...]:
        """The broker's keys as the document lists them: the rotation history once there is
        one, else the single key the broker was set up with (valid since ever)."""
        rows = self._conn.execute("SELECT body FROM broker_keys").fetchall()
        if not rows:
            return (member_keys(self._keys.public, 0.0, None)[0],)
        keys = [decode(MemberKey, loads_strict(body)) for (body,) in rows]
        keys.sort(key=lambda k: parse_ts(k.valid_from))
        return tuple(keys)

    def rotate_member_keys(
        self, member_id: str, new: PublicKeys, *, overlap_seconds: float, at: float | None = None
    ) -> Member:
        """Add ``new`` keys from ``at``; the member's current keys stay valid for the overlap.

        During the overlap signatures by either signing key verify (messages in flight, caches
        not yet refreshed); senders seal to the newest encryption key at once.
        """
        if overlap_seconds < 0:
            raise BadInput("the overlap period cannot be negative")
        start = now() if at is None else at
        member = self.get(member_id)
        if new.member != member_id:
            raise BadInput(f"the new public keys belong to {new.member}, not {member_id}")
        present = {k.keyid for k in member.keys}
        if new.signing_keyid in present or new.encryption_keyid in present:
            raise BadInput("a new key is already listed for this member: generate fresh keys")
        end = start + overlap_seconds
        kept = [_end_by(k, end) for k in member.keys]
        keys = _prune([*kept, *member_keys(new, start, None)], MAX_MEMBER_KEYS, start)
        changed = Member(**{**_fields(member), "keys": tuple(keys)})
        self._put(changed)
        return changed

    def revoke_key(self, member_id: str, keyid: str, *, at: float | None = None) -> Member:
        """Mark a member key revoked from ``at``: what it signs from then on is refused, what it
        signed before still verifies (the audit trail)."""
        when = now() if at is None else at
        member = self.get(member_id)
        found = [k for k in member.keys if k.keyid == keyid]
        if not found:
            raise NotFound(f"{member_id} has no key {keyid}")
        if found[0].revoked_at is not None:
            raise BadInput(f"key {keyid} of {member_id} was already revoked")
        stamp = format_ts(when)
        keys = tuple(
            MemberKey(**{**_fields(k), "revoked_at": stamp}) if k.keyid == keyid else k
            for k in member.keys
        )
        changed = Member(**{**_fields(member), "keys": keys})
        self._put(changed)
        return changed

    def rotate_broker_key(
        self, new: MemberKeys, *, overlap_seconds: float, at: float | None = None
    ) -> FederationDocument:
        """Publish ``new`` as the broker's key from ``at``, the current ones ending after the
        overlap. The document is signed by the new key and by every old key still in its
        overlap (``previous_broker_keys``): a connector that trusts only the old key verifies
        it and learns the new one from it (docs/PARTNER.md, key lifecycle)."""
        if overlap_seconds < 0:
            raise BadInput("the overlap period cannot be negative")
        if new.member != self._keys.member:
            raise BadInput(f"the new key is for {new.member}, not {self._keys.member}")
        start = now() if at is None else at
        with self._lock:
            current = self._broker_keys()
        if any(k.keyid == new.signing_keyid for k in current):
            raise BadInput("the new broker key is already listed")
        end = start + overlap_seconds
        history = [_end_by(k, end) for k in current]
        added = member_keys(new.public, start, None)[0]
        keys = _prune([*history, added], MAX_BROKER_KEYS, start)
        old_signer = self._keys
        self._keys = new
        self._previous = (*self._previous, old_signer.signing_key)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM broker_keys")
                self._conn.executemany(
                    "INSERT INTO broker_keys (keyid, body) VALUES (?, ?)",
                    [(k.keyid, dumps(encode(k)).decode()) for k in keys],
                )
                row = self._load_row()
                self._publish(version=(row[0] + 1) if row else 1, in_transaction=True)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._keys = old_signer
                raise
            self._view = None
        return self.document()


def _usable(key: MemberKey, at: float) -> bool:
    if key.revoked_at is not None and at >= parse_ts(key.revoked_at):
        return False
    return key.valid_until is None or at < parse_ts(key.valid_until)


def _end_by(key: MemberKey, end: float) -> MemberKey:
    """The key with its validity ending at ``end`` at the latest (a key ending sooner, or
    already revoked, keeps what it has)."""
    if key.revoked_at is not None:
        return key
    if key.valid_until is not None and parse_ts(key.valid_until) <= end:
        return key
    return MemberKey(**{**_fields(key), "valid_until": format_ts(end)})


def _prune(keys: list[MemberKey], limit: int, at: float) -> list[MemberKey]:
    """Drop the longest-expired keys when the list is over ``limit``. Expired keys are kept
    while there is room, so that old signatures in the audit trail still verify."""
    out = list(keys)
    while len(out) > limit:
        expired = [k for k in out if not _usable(k, at)]
        if not expired:
            raise BadInput(f"more than {limit} keys would be valid at once")
        out.remove(min(expired, key=lambda k: parse_ts(k.valid_until or k.revoked_at or "")))
    return out


def _fields(value: Member | MemberKey) -> dict[str, Any]:
    return {f: getattr(value, f) for f in type(value).__dataclass_fields__}
