"""The federation document as every party reads it: verify, trust, keys, and a caching client.

The broker signs the document; members verify it with a broker key they were given out of band
(``broker_public_key_file``), cache it, and refuse one older than the version they hold, so an
attacker who replays an old document (say, one listing a since-revoked key) gets nowhere.

Broker key rotation: during the overlap the broker lists both keys and signs the document with
both. A client that knows only the old key verifies that document and from then on also trusts the
new key *as the document lists it* (with its validity window), and applies the listed window to
the old key too: once the overlap ends, a document signed only by the old key is refused. The
documents that introduced new broker keys are kept beside the cache (``*.chain.json``) so that a
restart re-derives the same trust from the configured key, never from an unverified file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from ibex.envelope import Envelope, TrustedKey, TrustStore, Verified, verify
from ibex.errors import (
    BadInput,
    IbexError,
    SignatureError,
    StoreError,
    UnknownMember,
    UntrustedSigner,
)
from ibex.jsonio import dumps, loads_strict
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
MAX_CHAIN = 8


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

    ``current()`` returns the cached document, refreshing it in the background when older than
    ``max_age`` seconds (and waiting for the broker only past ``max_stale``); ``refresh()``
    fetches now (with the version as an ETag). A document with a lower
    version than the one held is refused. The last good document is kept on disk so that a
    restart does not accept an older one either. ``broker_keys`` are the keys given out of band
    (several during a broker key rotation); keys the broker introduces in a verified document
    are trusted from then on, within the validity the document gives them.
    """

    def __init__(
        self,
        broker_url: str,
        broker_keys: Iterable[bytes],
        *,
        cache_file: Path | None = None,
        max_age: float = 5.0,
        max_stale: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = broker_url.rstrip("/") + FEDERATION_PATH
        self._keys = tuple(broker_keys)
        if not self._keys:
            raise BadInput("a federation client needs at least one broker key")
        self._cache_file = cache_file
        self._max_age = max_age
        self._max_stale = max(max_stale, max_age)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._background_lock = threading.Lock()
        self._refreshing = False
        self._doc: FederationDocument | None = None
        self._trust: TrustStore | None = None
        self._chain: list[Envelope] = []
        self._fetched = 0.0
        self._client = httpx.Client(trust_env=False, follow_redirects=False)
        if cache_file is not None and cache_file.is_file():
            # A damaged cache is simply replaced by the next good fetch.
            with contextlib.suppress(IbexError):
                chain = self._read_chain()
                for env in chain:
                    self._accept(env, persist=False, record=False)
                self._chain = chain
                self._accept(Envelope.parse(cache_file.read_bytes()), persist=False)
            if self._doc is None:
                self._chain = []

    def close(self) -> None:
        self._client.close()

    @property
    def _chain_file(self) -> Path | None:
        if self._cache_file is None:
            return None
        return self._cache_file.with_name(self._cache_file.stem + ".chain.json")

    def _read_chain(self) -> list[Envelope]:
        path = self._chain_file
        if path is None or not path.is_file():
            return []
        items = loads_strict(path.read_bytes(), what=str(path))
        if not isinstance(items, list):
            raise BadInput(f"{path} is not a list of envelopes")
        return [Envelope.from_json(e) for e in items[-MAX_CHAIN:]]

    def document_trust(self) -> TrustStore:
        """The keys a federation document may be signed with now: the configured keys, bounded
        by the validity the held document gives them, and every broker key it lists."""
        listed = {k.keyid: k for k in self._doc.broker.keys} if self._doc else {}
        types = frozenset({PT_FEDERATION})
        keys = [TrustedKey("broker", k, types) for k in self._keys if key_id(k) not in listed]
        if self._doc is not None:
            keys.extend(trusted_keys(self._doc.broker.id, self._doc.broker.keys, types))
        return TrustStore.of(keys)

    def _known_keys(self) -> set[str]:
        known = {key_id(k) for k in self._keys}
        for env in self._chain:
            known |= {k.keyid for k in FederationDocument.parse(env.payload).broker.keys}
        return known

    def _accept(self, env: Envelope, *, persist: bool = True, record: bool = True) -> None:
        verified = verify(env, self.document_trust(), payload_type=PT_FEDERATION)
        doc = FederationDocument.parse(verified.payload)
        if self._doc is not None and doc.version < self._doc.version:
            raise SignatureError(
                f"refusing federation document version {doc.version}: "
                f"version {self._doc.version} is already held"
            )
        listed = {k.keyid for k in doc.broker.keys}
        # A document that introduces a broker key the configured keys and the saved chain do
        # not already account for joins the chain: a restart needs it to trust that key again.
        changed = record and bool(listed - self._known_keys())
        if changed:
            self._chain = [*self._chain, env][-MAX_CHAIN:]
        self._doc, self._trust = doc, build_trust(doc)
        if persist and self._cache_file is not None:
            if changed:
                self._write(self._chain_file, dumps([e.to_json() for e in self._chain]))
            self._write(self._cache_file, env.to_bytes())

    @staticmethod
    def _write(path: Path | None, data: bytes) -> None:
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def refresh(self, *, if_older_than: float | None = None) -> FederationDocument:
        """Fetch the document now; with ``if_older_than``, only if no fetch succeeded within
        that many seconds (another thread may have fetched while this one waited)."""
        with self._lock:
            if (
                if_older_than is not None
                and self._doc is not None
                and time.monotonic() - self._fetched <= if_older_than
            ):
                return self._doc
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
        """The held document; when it is older than ``max_age`` a refresh starts in the
        background and the held document answers meanwhile (it was verified, and is at most one
        fetch staler than asked). Only with no document, or one older than ``max_stale``, does
        the caller wait for the broker.

        Waiting on every stale read deadlocked a loaded federation: a provider's request threads
        all waited on the broker's /v1/federation while every broker thread waited on the
        provider's answers (seen at 32 concurrent queries), until the timeouts broke it."""
        doc = self._doc
        age = time.monotonic() - self._fetched
        if doc is None or age > self._max_stale:
            return self.refresh()
        if age > self._max_age:
            self._refresh_in_background()
        return doc

    def verify(
        self,
        envelope: Envelope,
        *,
        payload_type: str,
        at: float | None = None,
        require_signers: Iterable[str] = (),
    ) -> Verified:
        """:func:`ibex.envelope.verify` against the held document's keys. A signer the held
        document does not know (a member who has just joined, a key just rotated) makes the
        caller wait for a fresh document once, if the held one is older than ``max_age``, and
        try again; a document fetched within ``max_age`` is not fetched again, so unknown
        signatures cannot make every request call the broker."""
        signers = tuple(require_signers)  # iterated by each attempt

        def attempt() -> Verified:
            return verify(
                envelope, self.trust(), payload_type=payload_type, at=at, require_signers=signers
            )

        held = self.current()
        try:
            return attempt()
        except UntrustedSigner:
            if self.refresh(if_older_than=self._max_age) is held:
                raise  # nothing newer to be had: the signer is unknown indeed
        return attempt()

    def _refresh_in_background(self) -> None:
        with self._background_lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.refresh(if_older_than=self._max_age)
            except IbexError:
                pass  # a document that does not verify is not taken; the held one stays
            finally:
                with self._background_lock:
                    self._refreshing = False

        threading.Thread(target=run, name="ibex-federation-refresh", daemon=True).start()

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
