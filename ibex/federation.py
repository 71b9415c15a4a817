"""The federation document as every party reads it: verify, trust, keys, and a caching client.

The broker signs the document; members verify it with a broker key they were given out of band
(``broker_public_key_file``), cache it, and refuse one older than the version they hold, so an
attacker who replays an old document (say, one listing a since-revoked key) gets nowhere.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from ibex.envelope import Envelope, TrustedKey, TrustStore, verify
from ibex.errors import BadInput, IbexError, SignatureError, StoreError, UnknownMember
from ibex.keys import b64decode_strict, key_id
from ibex.messages import (
    PT_BROKER_ANSWER,
    PT_FEDERATION,
    PT_PROVIDER_ANSWER,
    PT_QUERY,
    PT_ROUTED_QUERY,
    FederationDocument,
    Member,
    MemberKey,
)
from ibex.timeutil import now, parse_ts

MEMBER_PAYLOAD_TYPES = frozenset({PT_QUERY, PT_PROVIDER_ANSWER})
BROKER_PAYLOAD_TYPES = frozenset(
    {PT_ROUTED_QUERY, PT_BROKER_ANSWER, PT_FEDERATION, PT_PROVIDER_ANSWER}
)
FEDERATION_PATH = "/v1/federation"


def trusted_keys(member: str, keys: Iterable[MemberKey], types: frozenset[str]) -> list[TrustedKey]:
    out: list[TrustedKey] = []
    for k in keys:
        if k.use != "signing":
            continue
        raw = b64decode_strict(k.public_key, what="public key", size=32)
        if key_id(raw) != k.keyid:
            raise BadInput(f"a key of {member} does not match its key id")
        out.append(
            TrustedKey(
                member=member,
                public_key=raw,
                payload_types=types,
                not_before=parse_ts(k.valid_from),
                not_after=parse_ts(k.valid_until) if k.valid_until else None,
                revoked_at=parse_ts(k.revoked_at) if k.revoked_at else None,
            )
        )
    return out


def build_trust(doc: FederationDocument) -> TrustStore:
    """Who may sign what: members sign queries and answers; the broker signs its own messages
    (and countersigns answers). Suspended members' keys are left out: their signatures no
    longer count."""
    keys = trusted_keys(doc.broker.id, doc.broker.keys, BROKER_PAYLOAD_TYPES)
    for m in doc.members:
        if m.status == "active":
            keys.extend(trusted_keys(m.id, m.keys, MEMBER_PAYLOAD_TYPES))
    return TrustStore.of(keys)


def encryption_key(member: Member, at: float | None = None) -> bytes:
    """The member's current X25519 public key: the newest one valid at ``at``."""
    when = now() if at is None else at
    usable = [
        k
        for k in member.keys
        if k.use == "encryption"
        and parse_ts(k.valid_from) <= when
        and (k.valid_until is None or when < parse_ts(k.valid_until))
        and (k.revoked_at is None or when < parse_ts(k.revoked_at))
    ]
    if not usable:
        raise UnknownMember(f"{member.id} has no valid encryption key")
    newest = max(usable, key=lambda k: parse_ts(k.valid_from))
    return b64decode_strict(newest.public_key, what="encryption key", size=32)


def witness_keys(members: Iterable[Member]) -> dict[str, bytes]:
    """Active members' current Ed25519 keys: who may cosign an audit checkpoint."""
    out: dict[str, bytes] = {}
    for m in members:
        if m.status != "active":
            continue
        for k in m.keys:
            if k.use == "signing" and k.revoked_at is None:
                out[m.id] = b64decode_strict(k.public_key, what="witness key", size=32)
    return out


def verify_document(env: Envelope, broker_keys: Iterable[bytes]) -> FederationDocument:
    """Check the broker's signature with keys known out of band, then parse."""
    trust = TrustStore.of(TrustedKey("broker", k, frozenset({PT_FEDERATION})) for k in broker_keys)
    verified = verify(env, trust, payload_type=PT_FEDERATION)
    return FederationDocument.parse(verified.payload)


class FederationClient:
    """A member's cached, verified view of the federation, refreshed from the broker.

    ``current()`` returns the cached document, refreshing it when older than ``max_age``
    seconds; ``refresh()`` fetches now (with the version as an ETag). A document with a lower
    version than the one held is refused. The last good document is kept on disk so that a
    restart does not accept an older one either.
    """

    def __init__(
        self,
        broker_url: str,
        broker_keys: Iterable[bytes],
        *,
        cache_file: Path | None = None,
        max_age: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = broker_url.rstrip("/") + FEDERATION_PATH
        self._keys = tuple(broker_keys)
        self._cache_file = cache_file
        self._max_age = max_age
        self._timeout = timeout
        self._lock = threading.Lock()
        self._doc: FederationDocument | None = None
        self._trust: TrustStore | None = None
        self._fetched = 0.0
        self._client = httpx.Client(trust_env=False, follow_redirects=False)
        if cache_file is not None and cache_file.is_file():
            # A damaged cache is simply replaced by the next good fetch.
            with contextlib.suppress(IbexError):
                self._accept(Envelope.parse(cache_file.read_bytes()), persist=False)

    def close(self) -> None:
        self._client.close()

    def _accept(self, env: Envelope, *, persist: bool = True) -> None:
        doc = verify_document(env, self._keys)
        if self._doc is not None and doc.version < self._doc.version:
            raise SignatureError(
                f"refusing federation document version {doc.version}: "
                f"version {self._doc.version} is already held"
            )
        self._doc, self._trust = doc, build_trust(doc)
        if persist and self._cache_file is not None:
            tmp = self._cache_file.with_suffix(".tmp")
            tmp.write_bytes(env.to_bytes())
            tmp.replace(self._cache_file)

    def refresh(self) -> FederationDocument:
        with self._lock:
            headers = {"If-None-Match": f'"v{self._doc.version}"'} if self._doc else {}
            try:
                resp = self._client.get(self._url, headers=headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                if self._doc is not None:
                    return self._doc  # keep serving the last verified document
                raise StoreError(
                    f"cannot fetch the federation document: {type(exc).__name__}"
                ) from None
            self._fetched = time.monotonic()
            if resp.status_code == 304 and self._doc is not None:
                return self._doc
            if resp.status_code != 200:
                if self._doc is not None:
                    return self._doc
                raise StoreError(f"the broker answered HTTP {resp.status_code} for the federation")
            self._accept(Envelope.parse(resp.content))
            assert self._doc is not None
            return self._doc

    def current(self) -> FederationDocument:
        if self._doc is None or time.monotonic() - self._fetched > self._max_age:
            return self.refresh()
        return self._doc

    def trust(self) -> TrustStore:
        self.current()
        assert self._trust is not None
        return self._trust

    def member(self, member_id: str) -> Member:
        member = self.current().member(member_id)
        if member is None:
            member = self.refresh().member(member_id)
        if member is None:
            raise UnknownMember(f"{member_id} is not a member of this federation")
        return member
