"""DSSE-style signed envelopes with Ed25519.

``{"payloadType": T, "payload": base64(P), "signatures": [{"keyid": K, "sig": base64(S)}]}`` where
each ``S`` is an Ed25519 signature over ``PAE(T, P)`` (the DSSE v1 pre-authentication encoding).
:func:`verify` hands back the payload bytes only when a key that the caller trusts *for that
payload type* signed them; those exact bytes are what the caller parses, so no canonicalisation
step sits between what was signed and what is believed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ibex.errors import BadInput, EnvelopeError, InputTooLarge, SignatureError, UntrustedSigner
from ibex.jsonio import DEFAULT_MAX_BYTES, dumps, loads_strict
from ibex.keys import b64, b64decode_strict, key_id

MAX_SIGNATURES = 8
ENVELOPE_KEYS = frozenset({"payloadType", "payload", "signatures"})


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payloadType": self.payload_type,
            "payload": b64(self.payload),
            "signatures": [{"keyid": s.keyid, "sig": b64(s.sig)} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> Envelope:
        if not isinstance(obj, dict):
            raise EnvelopeError("an envelope is a JSON object")
        extra = set(obj) - ENVELOPE_KEYS
        missing = ENVELOPE_KEYS - set(obj)
        if missing:
            raise EnvelopeError(f"envelope lacks {', '.join(sorted(missing))}")
        if extra:
            raise EnvelopeError(f"envelope has unknown members: {', '.join(sorted(extra))}")
        ptype = obj["payloadType"]
        if not isinstance(ptype, str) or not ptype or len(ptype) > 200:
            raise EnvelopeError("payloadType must be a non-empty string of at most 200 characters")
        try:
            payload = b64decode_strict(obj["payload"], what="payload")
        except BadInput as exc:
            raise EnvelopeError(exc.detail) from None
        sigs = obj["signatures"]
        if not isinstance(sigs, list) or not sigs:
            raise EnvelopeError("signatures must be a non-empty list")
        if len(sigs) > MAX_SIGNATURES:
            raise EnvelopeError(f"at most {MAX_SIGNATURES} signatures")
        parsed: list[Signature] = []
        seen: set[str] = set()
        for i, s in enumerate(sigs):
            if not isinstance(s, dict) or set(s) != {"keyid", "sig"}:
                raise EnvelopeError(f"signature {i} must have exactly keyid and sig")
            kid = s["keyid"]
            if not isinstance(kid, str) or len(kid) != 32 or not _is_lower_hex(kid):
                raise EnvelopeError(f"signature {i}: keyid must be 32 lower-case hex digits")
            if kid in seen:
                raise EnvelopeError(f"signature {i}: keyid appears twice")
            seen.add(kid)
            try:
                raw = b64decode_strict(s["sig"], what=f"signature {i}", size=64)
            except BadInput as exc:
                raise EnvelopeError(exc.detail) from None
            parsed.append(Signature(kid, raw))
        return cls(ptype, payload, tuple(parsed))

    @classmethod
    def parse(cls, data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
        try:
            obj = loads_strict(data, max_bytes=max_bytes, what="envelope")
        except InputTooLarge:
            raise
        except BadInput as exc:
            raise EnvelopeError(exc.detail) from None
        return cls.from_json(obj)


def _is_lower_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


def sign(payload_type: str, payload: bytes, key: SigningKey) -> Envelope:
    """A new envelope over ``payload`` with one signature."""
    return add_signature(Envelope(payload_type, payload, ()), key)


def add_signature(envelope: Envelope, key: SigningKey) -> Envelope:
    """Countersign: the same payload, one more signature."""
    kid = key_id(bytes(key.verify_key))
    if any(s.keyid == kid for s in envelope.signatures):
        raise EnvelopeError("this key has already signed the envelope")
    sig = key.sign(pae(envelope.payload_type, envelope.payload)).signature
    return replace(envelope, signatures=(*envelope.signatures, Signature(kid, sig)))


# --- trust -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the verifier trusts, for which payload types, and when."""

    member: str
    public_key: bytes
    payload_types: frozenset[str]
    not_before: float | None = None
    not_after: float | None = None
    revoked_at: float | None = None

    @property
    def keyid(self) -> str:
        return key_id(self.public_key)

    def usable_at(self, at: float) -> str | None:
        """None when usable at ``at``, else the reason it is not."""
        if self.not_before is not None and at < self.not_before:
            return "key not yet valid"
        if self.not_after is not None and at >= self.not_after:
            return "key expired"
        if self.revoked_at is not None and at >= self.revoked_at:
            return "key revoked"
        return None


@dataclass(slots=True)
class TrustStore:
    """Key id → trusted key. Built from the federation document or local configuration."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)

    def add(self, key: TrustedKey) -> None:
        self.keys[key.keyid] = key

    def get(self, keyid: str) -> TrustedKey | None:
        return self.keys.get(keyid)

    @classmethod
    def of(cls, keys: Iterable[TrustedKey]) -> TrustStore:
        store = cls()
        for k in keys:
            store.add(k)
        return store


@dataclass(frozen=True, slots=True)
class Verified:
    """A payload whose signatures checked out, and who made them."""

    payload: bytes
    payload_type: str
    signers: Mapping[str, str]  # member id -> keyid


def verify(
    envelope: Envelope,
    trust: TrustStore,
    *,
    payload_type: str,
    at: float | None = None,
    require_signers: Iterable[str] = (),
) -> Verified:
    """Return the payload if a trusted key signed it for ``payload_type``; raise otherwise.

    A signature by a trusted key that does not verify fails the whole envelope (it was tampered
    with); signatures by unknown keys are ignored, as DSSE says. Every member in
    ``require_signers`` must have signed (e.g. provider *and* broker on a countersigned answer).
    """
    if envelope.payload_type != payload_type:
        raise SignatureError(f"payloadType is {envelope.payload_type!r}; expected {payload_type!r}")
    when = time.time() if at is None else at
    message = pae(envelope.payload_type, envelope.payload)
    signers: dict[str, str] = {}
    skipped: list[str] = []
    for s in envelope.signatures:
        tk = trust.get(s.keyid)
        if tk is None:
            skipped.append(f"{s.keyid[:8]}…: unknown key")
            continue
        try:
            VerifyKey(tk.public_key).verify(message, s.sig)
        except BadSignatureError:
            raise SignatureError(
                f"the signature by {tk.member} (key {s.keyid}) does not verify"
            ) from None
        if payload_type not in tk.payload_types:
            skipped.append(f"{tk.member}: not trusted to sign {payload_type}")
            continue
        reason = tk.usable_at(when)
        if reason:
            skipped.append(f"{tk.member}: {reason}")
            continue
        signers[tk.member] = s.keyid
    if not signers:
        why = "; ".join(skipped) or "no signatures"
        raise UntrustedSigner(f"no trusted signature for {payload_type} ({why})")
    missing = [m for m in require_signers if m not in signers]
    if missing:
        raise UntrustedSigner(f"missing required signature by {', '.join(missing)}")
    return Verified(envelope.payload, payload_type, signers)
