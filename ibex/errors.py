"""One exception hierarchy for every IBEX party.

Each error carries a stable kebab-case ``code`` (machine-readable, part of the protocol), an HTTP
``status`` and a plain ``detail`` a person can act on. The HTTP layer renders them as RFC 9457
``application/problem+json`` (see :mod:`ibex.web`). Details never contain criteria values or record
contents: callers pass field *names* and JSON pointers, never the values behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://ibex.example/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure: where (a JSON pointer into the instance) and what."""

    pointer: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.message}


class IbexError(Exception):
    """Base of every error IBEX raises on purpose.

    Subclasses set ``code``, ``status`` and ``title``; instances carry the ``detail``.
    """

    code: ClassVar[str] = "ibex-error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "IBEX error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors or [])

    def diagnostics(self) -> str:
        """A multi-line explanation for a person at a terminal."""
        lines = [f"{self.title} [{self.code}]: {self.detail}"]
        lines.extend(f"  at {e.pointer or '/'}: {e.message}" for e in self.errors)
        return "\n".join(lines)

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem details object for this error."""
        problem: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            problem["instance"] = instance
        if self.errors:
            problem["errors"] = [e.to_json() for e in self.errors]
        return problem


# --- input -----------------------------------------------------------------------------------


class BadInput(IbexError):
    code = "bad-input"
    status = 400
    title = "Malformed input"


class InputTooLarge(BadInput):
    code = "payload-too-large"
    status = 413
    title = "Input too large"


class UnsupportedMediaType(BadInput):
    code = "unsupported-media-type"
    status = 415
    title = "Unsupported media type"


class SchemaValidationError(BadInput):
    code = "schema-invalid"
    status = 422
    title = "Schema validation failed"


class UnknownSchema(BadInput):
    code = "schema-unknown"
    status = 422
    title = "Unknown schema"


class MessageError(BadInput):
    code = "message-malformed"
    title = "Malformed protocol message"


# --- configuration and local files -----------------------------------------------------------


class ConfigError(IbexError):
    code = "config-invalid"
    title = "Invalid configuration"


class KeyFileError(IbexError):
    code = "key-file-invalid"
    title = "Unusable key file"


# --- trust and crypto ------------------------------------------------------------------------


class EnvelopeError(BadInput):
    code = "envelope-malformed"
    title = "Malformed signed envelope"


class SignatureError(IbexError):
    code = "signature-invalid"
    status = 401
    title = "Signature not valid"


class UntrustedSigner(SignatureError):
    code = "signer-untrusted"
    title = "No trusted signature"


class SealError(IbexError):
    code = "seal-invalid"
    status = 400
    title = "Sealed payload could not be opened"


class TimeWindowError(IbexError):
    code = "time-window"
    status = 401
    title = "Outside the validity window"


class ReplayError(IbexError):
    code = "nonce-replayed"
    status = 409
    title = "Replayed message"


class UnknownMember(IbexError):
    code = "member-unknown"
    status = 403
    title = "Unknown or inactive member"


class Forbidden(IbexError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class Unauthorized(IbexError):
    code = "unauthorized"
    status = 401
    title = "Authentication required"


class NotFound(IbexError):
    code = "not-found"
    status = 404
    title = "Not found"


# --- storage ---------------------------------------------------------------------------------


class StoreError(IbexError):
    code = "store-unusable"
    status = 503
    title = "Encrypted store unusable"


class StoreKeyError(StoreError):
    code = "store-key-invalid"
    title = "Encrypted store key missing or wrong"


# --- policy ----------------------------------------------------------------------------------


class PolicyError(IbexError):
    code = "policy-engine-error"
    status = 503
    title = "Policy engine error"


class AuditError(IbexError):
    code = "audit-unavailable"
    status = 503
    title = "Audit log unavailable"
