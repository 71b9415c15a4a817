"""Sealing: encrypt to a member's X25519 key so that only that member can read.

The broker routes sealed criteria and sealed answers without being able to open them. Anonymous
sealing (:func:`seal`, libsodium's sealed box) is used for payloads whose sender is authenticated
by a signature anyway; :func:`seal_from` (an authenticated ``Box``) is for the rare case where the
ciphertext itself must prove its sender.
"""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey, SealedBox

from ibex.errors import SealError


def seal(plaintext: bytes, recipient: bytes | PublicKey) -> bytes:
    """Encrypt ``plaintext`` to ``recipient`` (a raw 32-byte X25519 public key)."""
    key = recipient if isinstance(recipient, PublicKey) else _public(recipient)
    return bytes(SealedBox(key).encrypt(plaintext))


def open_sealed(ciphertext: bytes, private_key: PrivateKey) -> bytes:
    """Decrypt a sealed box addressed to ``private_key``; any failure is a :class:`SealError`."""
    try:
        return bytes(SealedBox(private_key).decrypt(ciphertext))
    except (CryptoError, ValueError, TypeError):
        raise SealError(
            "the sealed payload is not addressed to this member or was altered"
        ) from None


def seal_from(plaintext: bytes, sender: PrivateKey, recipient: bytes | PublicKey) -> bytes:
    """Authenticated encryption from ``sender`` to ``recipient`` (nonce prepended)."""
    key = recipient if isinstance(recipient, PublicKey) else _public(recipient)
    return bytes(Box(sender, key).encrypt(plaintext))


def open_from(ciphertext: bytes, recipient: PrivateKey, sender: bytes | PublicKey) -> bytes:
    key = sender if isinstance(sender, PublicKey) else _public(sender)
    try:
        return bytes(Box(recipient, key).decrypt(ciphertext))
    except (CryptoError, ValueError, TypeError):
        raise SealError(
            "the boxed payload was not sent by the expected member or was altered"
        ) from None


def _public(raw: bytes) -> PublicKey:
    try:
        return PublicKey(raw)
    except (ValueError, TypeError, CryptoError):
        raise SealError("the recipient key is not a 32-byte X25519 public key") from None
