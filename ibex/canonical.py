"""RFC 8785 canonical JSON, used only where a JSON value must be hashed.

Signed messages are never canonicalised: the bytes that were signed are the bytes that are parsed
(see :mod:`ibex.envelope`). Canonical JSON is for audit leaves, commitments and digests, where two
parties must derive the same bytes from the same value.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from ibex.errors import BadInput


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JCS) serialisation of ``value``."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise BadInput(f"value cannot be canonicalised as JSON: {type(exc).__name__}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + sha256_hex(canonical_json(value))


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of raw bytes (a sealed payload, a policy bundle)."""
    return "sha256:" + sha256_hex(data)
