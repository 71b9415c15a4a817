"""Sealing to X25519 keys: only the addressee opens, any alteration is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from ibex.errors import SealError
from ibex.sealing import open_from, open_sealed, seal, seal_from

SECRET = b"Ivanova Maria 1980-03-07"


def test_seal_and_open() -> None:
    bob = PrivateKey.generate()
    box = seal(SECRET, bytes(bob.public_key))
    assert SECRET not in box
    assert open_sealed(box, bob) == SECRET


def test_only_the_addressee_can_open() -> None:
    bob, eve = PrivateKey.generate(), PrivateKey.generate()
    with pytest.raises(SealError):
        open_sealed(seal(SECRET, bytes(bob.public_key)), eve)


@given(st.integers(min_value=0, max_value=len(SECRET) + 47), st.integers(1, 255))
def test_any_flipped_byte_is_refused(pos: int, xor: int) -> None:
    bob = PrivateKey(bytes(range(32)))
    box = bytearray(seal(SECRET, bytes(bob.public_key)))
    box[pos] ^= xor
    with pytest.raises(SealError):
        open_sealed(bytes(box), bob)


def test_truncated_and_garbage_are_refused() -> None:
    bob = PrivateKey.generate()
    box = seal(SECRET, bytes(bob.public_key))
    for bad in (b"", b"x", box[:-1], box[:40]):
        with pytest.raises(SealError):
            open_sealed(bad, bob)


def test_bad_recipient_key_is_refused() -> None:
    with pytest.raises(SealError):
        seal(SECRET, b"short")


def test_authenticated_box_proves_the_sender() -> None:
    alice, bob, eve = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()
    box = seal_from(SECRET, alice, bytes(bob.public_key))
    assert open_from(box, bob, bytes(alice.public_key)) == SECRET
    with pytest.raises(SealError):
        open_from(box, bob, bytes(eve.public_key))
