"""DSSE envelopes: signing, verification, countersignatures and every kind of tampering."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from ibex.envelope import (
    Envelope,
    TrustedKey,
    TrustStore,
    add_signature,
    pae,
    sign,
    verify,
)
from ibex.errors import BadInput, EnvelopeError, SignatureError, UntrustedSigner
from ibex.keys import key_id

PT = "application/vnd.ibex.query.v1+json"
PAYLOAD = b'{"hello":"world"}'


def trusted(member: str, key: SigningKey, *types: str, **kw: float) -> TrustedKey:
    return TrustedKey(member, bytes(key.verify_key), frozenset(types or (PT,)), **kw)


@pytest.fixture()
def alice() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture()
def trust(alice: SigningKey) -> TrustStore:
    return TrustStore.of([trusted("CA-CBSA", alice)])


def test_pae_matches_the_dsse_specification() -> None:
    # The worked example from the DSSE v1 protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_sign_and_verify(alice: SigningKey, trust: TrustStore) -> None:
    env = sign(PT, PAYLOAD, alice)
    parsed = Envelope.parse(env.to_bytes())
    verified = verify(parsed, trust, payload_type=PT)
    assert verified.payload == PAYLOAD
    assert verified.signers == {"CA-CBSA": key_id(bytes(alice.verify_key))}


def _mutate(env: Envelope, field: str) -> dict[str, object]:
    doc = env.to_json()
    if field == "payload":
        raw = bytearray(env.payload)
        raw[3] ^= 0x01
        doc["payload"] = base64.b64encode(bytes(raw)).decode()
    elif field == "payloadType":
        doc["payloadType"] = PT.replace("query", "querz")
    elif field == "sig":
        raw = bytearray(env.signatures[0].sig)
        raw[10] ^= 0x80
        doc["signatures"] = [
            {"keyid": env.signatures[0].keyid, "sig": base64.b64encode(bytes(raw)).decode()}
        ]
    elif field == "keyid":
        kid = env.signatures[0].keyid
        flipped = ("1" if kid[0] == "0" else "0") + kid[1:]
        doc["signatures"] = [
            {"keyid": flipped, "sig": base64.b64encode(env.signatures[0].sig).decode()}
        ]
    return doc


@pytest.mark.parametrize("field", ["payload", "payloadType", "sig", "keyid"])
def test_a_flipped_byte_anywhere_is_refused(
    alice: SigningKey, trust: TrustStore, field: str
) -> None:
    env = sign(PT, PAYLOAD, alice)
    tampered = Envelope.from_json(_mutate(env, field))
    with pytest.raises(SignatureError):
        verify(tampered, trust, payload_type=PT)


def test_a_flipped_payload_type_is_refused_even_if_the_caller_expects_it(
    alice: SigningKey, trust: TrustStore
) -> None:
    env = sign(PT, PAYLOAD, alice)
    other = PT.replace("query", "querz")
    tampered = Envelope.from_json(_mutate(env, "payloadType"))
    bigger = TrustStore.of([trusted("CA-CBSA", alice, PT, other)])
    with pytest.raises(SignatureError, match="does not verify"):
        verify(tampered, bigger, payload_type=other)


def test_wrong_key_is_refused(trust: TrustStore) -> None:
    env = sign(PT, PAYLOAD, SigningKey.generate())
    with pytest.raises(UntrustedSigner, match="unknown key"):
        verify(env, trust, payload_type=PT)


def test_key_not_trusted_for_this_payload_type(alice: SigningKey) -> None:
    store = TrustStore.of([trusted("CA-CBSA", alice, "application/other")])
    with pytest.raises(UntrustedSigner, match="not trusted to sign"):
        verify(sign(PT, PAYLOAD, alice), store, payload_type=PT)


def test_expired_revoked_and_future_keys(alice: SigningKey) -> None:
    env = sign(PT, PAYLOAD, alice)
    for kw, why in (
        ({"not_after": 1000.0}, "expired"),
        ({"revoked_at": 1000.0}, "revoked"),
        ({"not_before": 5000.0}, "not yet valid"),
    ):
        store = TrustStore.of([trusted("CA-CBSA", alice, **kw)])
        with pytest.raises(UntrustedSigner, match=why):
            verify(env, store, payload_type=PT, at=2000.0)
    # Signed before revocation: still verifies for the audit trail.
    store = TrustStore.of([trusted("CA-CBSA", alice, revoked_at=3000.0)])
    assert verify(env, store, payload_type=PT, at=2000.0).payload == PAYLOAD


def test_countersignature_and_required_signers(alice: SigningKey) -> None:
    broker = SigningKey.generate()
    store = TrustStore.of([trusted("US-CBP", alice), trusted("IBEX-BROKER", broker)])
    env = sign(PT, PAYLOAD, alice)
    with pytest.raises(UntrustedSigner, match="missing required signature by IBEX-BROKER"):
        verify(env, store, payload_type=PT, require_signers=["US-CBP", "IBEX-BROKER"])
    both = add_signature(env, broker)
    got = verify(both, store, payload_type=PT, require_signers=["US-CBP", "IBEX-BROKER"])
    assert set(got.signers) == {"US-CBP", "IBEX-BROKER"}
    with pytest.raises(EnvelopeError, match="already signed"):
        add_signature(both, broker)


def test_one_bad_signature_from_a_trusted_key_fails_the_envelope(alice: SigningKey) -> None:
    broker = SigningKey.generate()
    store = TrustStore.of([trusted("US-CBP", alice), trusted("IBEX-BROKER", broker)])
    env = add_signature(sign(PT, PAYLOAD, alice), broker)
    doc = env.to_json()
    sigs = doc["signatures"]
    assert isinstance(sigs, list)
    sigs[1]["sig"] = base64.b64encode(bytes(64)).decode()
    with pytest.raises(SignatureError, match="IBEX-BROKER"):
        verify(Envelope.from_json(doc), store, payload_type=PT)


@pytest.mark.parametrize(
    "doc",
    [
        "[]",
        "{}",
        '{"payloadType": "x", "payload": "", "signatures": []}',
        '{"payloadType": "", "payload": "", "signatures": [{"keyid": "'
        + "0" * 32
        + '", "sig": ""}]}',
        '{"payloadType": "x", "payload": "!!", "signatures": [{"keyid": "'
        + "0" * 32
        + '", "sig": ""}]}',
        '{"payloadType": "x", "payload": "", "signatures": [{"keyid": "abc", "sig": ""}]}',
        '{"payloadType": "x", "payload": "", "signatures": [], "extra": 1}',
        '{"payloadType": "x", "payloadType": "y", "payload": "", "signatures": []}',
    ],
)
def test_malformed_envelopes_are_refused(doc: str) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.parse(doc)


def test_truncated_envelope_is_refused(alice: SigningKey) -> None:
    data = sign(PT, PAYLOAD, alice).to_bytes()
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(EnvelopeError):
            Envelope.parse(data[:cut])


def test_oversized_envelope_is_refused(alice: SigningKey) -> None:
    data = sign(PT, b"x" * 2000, alice).to_bytes()
    with pytest.raises(BadInput, match="limit"):
        Envelope.parse(data, max_bytes=1000)


def test_duplicate_keyids_are_refused(alice: SigningKey) -> None:
    doc = sign(PT, PAYLOAD, alice).to_json()
    sigs = doc["signatures"]
    assert isinstance(sigs, list)
    doc["signatures"] = sigs * 2
    with pytest.raises(EnvelopeError, match="twice"):
        Envelope.from_json(doc)


@given(st.binary(max_size=600))
def test_parse_random_bytes_raises_only_kernel_errors(data: bytes) -> None:
    with contextlib.suppress(BadInput):
        Envelope.parse(data)


_KEY = SigningKey(bytes(range(32)))
_ENV = sign(PT, PAYLOAD, _KEY).to_bytes()
_STORE = TrustStore.of([trusted("CA-CBSA", _KEY)])


@given(st.integers(min_value=0, max_value=len(_ENV) - 1), st.integers(min_value=1, max_value=255))
def test_any_single_byte_mutation_never_verifies_as_something_else(pos: int, xor: int) -> None:
    data = bytearray(_ENV)
    data[pos] ^= xor
    try:
        env = Envelope.parse(bytes(data))
        got = verify(env, _STORE, payload_type=PT)
    except (BadInput, SignatureError):
        return
    # Mutations that survive can only be ones JSON and base64 ignore (e.g. letter case of "\u"
    # escapes): the verified payload is still exactly what was signed.
    assert got.payload == PAYLOAD
    assert json.loads(got.payload) == {"hello": "world"}
