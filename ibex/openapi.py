"""The OpenAPI 3.1 description of the broker and connector HTTP APIs, served at /v1/openapi.json.

The message schemas are the normative ones in ``schemas/messages/`` (docs/PROTOCOL.md), embedded
under ``components/schemas`` with their cross-references rewritten to document-local
``#/components/schemas/...`` pointers, so that tools which do not resolve embedded ``$id``s (or
that refuse to fetch ``https://ibex.example``) read the document as it is. Every error status is
``application/problem+json`` (RFC 9457). ``tests/unit/test_openapi.py`` keeps this true: the
documented paths and methods equal each app's registered routes, and real requests and responses
validate against the documented schemas.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flask import Flask, Response

from ibex.jsonio import dumps

MESSAGES_DIR = Path(__file__).resolve().parent.parent / "schemas" / "messages"
OPENAPI_PATH = "/v1/openapi.json"
ROLES = ("broker", "connector")
PROBLEM = "application/problem+json"
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Malformed input",
    401: "Not authenticated, or a signature that does not verify or is not trusted",
    403: "Authenticated but not allowed, or an unknown or suspended member",
    404: "No such resource",
    409: "The nonce was already used",
    413: "Body over the limit",
    415: "Unsupported media type",
    422: "Schema validation failed",
    500: "Internal error (says nothing about internals; carries a request id)",
    502: "An upstream party answered badly",
    503: "A store, the policy engine or the audit log is unusable",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable, kebab-case code.",
    "required": ["type", "title", "status", "code"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,63}$"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
        "checks": {"type": "array", "items": {"type": "string"}},
    },
}

_HASHES = {
    "type": "object",
    "required": ["hashes"],
    "additionalProperties": False,
    "properties": {
        "hashes": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/common/$defs/base64"},
        }
    },
}

EXTRA_SCHEMAS: dict[str, Any] = {
    "Problem": PROBLEM_SCHEMA,
    "Alive": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {
            "status": {"const": "alive"},
            "member": {"$ref": "#/components/schemas/common/$defs/member_id"},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {
            "status": {"const": "ready"},
            "member": {"$ref": "#/components/schemas/common/$defs/member_id"},
            "policy_digest": {"$ref": "#/components/schemas/common/$defs/digest"},
        },
    },
    "AuditEntries": {
        "type": "object",
        "required": ["entries"],
        "additionalProperties": False,
        "properties": {
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "purged"],
                    "additionalProperties": False,
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "purged": {"type": "boolean"},
                        "leaf": {"$ref": "#/components/schemas/common/$defs/base64"},
                        "leaf_hash": {"$ref": "#/components/schemas/common/$defs/base64"},
                    },
                },
            }
        },
    },
    "AuditProof": _HASHES,
    "Cosigners": {
        "type": "object",
        "required": ["cosigners"],
        "additionalProperties": False,
        "properties": {"cosigners": {"type": "array", "items": {"type": "string"}}},
    },
    "GatewayResult": {
        "type": "object",
        "description": "The verified, plain answer a connector's gateway hands its agency: one "
        "entry per target with status, decision, verification and records; or the broker's "
        "refusal.",
        "required": ["query_id"],
        "properties": {
            "query_id": {"$ref": "#/components/schemas/common/$defs/uuid"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["target", "status"],
                    "properties": {
                        "target": {"$ref": "#/components/schemas/common/$defs/member_id"},
                        "status": {"type": "string"},
                    },
                },
            },
            "broker_refusal": {"type": "object"},
        },
    },
    "OpenAPIDocument": {"type": "object", "required": ["openapi", "paths"]},
}


# --- the message schemas, made document-local -------------------------------------------------


def _load_messages(directory: Path) -> dict[str, Any]:
    docs: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for path in sorted(directory.glob("*.schema.json")):
        name = path.name.removesuffix(".schema.json")
        doc = json.loads(path.read_text(encoding="utf-8"))
        docs[name] = doc
        names[str(doc["$id"])] = name
    out: dict[str, Any] = {}
    for name, doc in docs.items():
        body = {k: v for k, v in doc.items() if k not in ("$schema", "$id")}
        out[name] = _rewrite(copy.deepcopy(body), name, names)
    return out


def _rewrite(node: Any, name: str, names: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_rewrite(v, name, names) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = _local_ref(value, name, names)
        else:
            out[key] = _rewrite(value, name, names)
    return out


def _local_ref(ref: str, name: str, names: dict[str, str]) -> str:
    base, _, fragment = ref.partition("#")
    target = name if base == "" else names.get(base)
    if target is None:
        raise ValueError(f"schema {name} refers to {ref}, which is not a message schema")
    return f"#/components/schemas/{target}{fragment}"


# --- operations ------------------------------------------------------------------------------


def _json(schema_name: str, media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _ok(description: str, schema_name: str, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, **_json(schema_name)}}


def _text(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }


def _problems(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(s): {"description": _REASONS[s], **_json("Problem", PROBLEM)}
        for s in sorted({*statuses, 500})
    }


def _op(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    body_media: str = "application/json",
    parameters: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body, body_media)}
    elif body_media == "text/plain":
        op["requestBody"] = {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string", "maxLength": 16384}}},
        }
    if parameters:
        op["parameters"] = parameters
    if security is not None:
        op["security"] = security
    return op


def _int_param(name: str, minimum: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "schema": {"type": "integer", "minimum": minimum, "maximum": (1 << 48) - 1},
    }


BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
BODY_ERRORS = (400, 413, 415, 422)


def _common_paths(role: str) -> dict[str, Any]:
    ready_detail = (
        "audit log, key files, member registry and policy engine"
        if role == "broker"
        else "disclosure log, record store, federation document, key files, local policy"
    )
    entries_role = "oversight" if role == "broker" else "gateway (the agency's own oversight)"
    return {
        "/healthz": {
            "get": _op(
                f"{role}_healthz", "Alive: the process answers.", "operations",
                {**_ok("Alive.", "Alive"), **_problems(())},
            )
        },
        "/readyz": {
            "get": _op(
                f"{role}_readyz", f"Ready: {ready_detail} usable.", "operations",
                {**_ok("Ready.", "Ready"), **_problems((503,))},
            )
        },
        "/metrics": {
            "get": _op(
                f"{role}_metrics",
                "Prometheus metrics (text exposition); metadata only, no personal data.",
                "operations",
                {**_text("Prometheus text exposition format."), **_problems(())},
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                f"{role}_openapi", "This document.", "operations",
                {**_ok("The OpenAPI 3.1 document.", "OpenAPIDocument"), **_problems(())},
            )
        },
        "/v1/audit/checkpoint": {
            "get": _op(
                f"{role}_audit_checkpoint",
                "The latest signed checkpoint (C2SP signed note) with its cosignatures.",
                "audit",
                {**_text("A signed checkpoint note."), **_problems((400, 404, 503))},
            )
        },
        "/v1/audit/entries": {
            "get": _op(
                f"{role}_audit_entries",
                f"Audit entries start <= i < end (at most 1000); {entries_role} role only.",
                "audit",
                {**_ok("The entries.", "AuditEntries"), **_problems((400, 401, 403, 503))},
                parameters=[_int_param("start"), _int_param("end")],
                security=BEARER,
            )
        },
        "/v1/audit/proof/inclusion": {
            "get": _op(
                f"{role}_audit_inclusion", "RFC 9162 inclusion proof.", "audit",
                {**_ok("The proof.", "AuditProof"), **_problems((400, 503))},
                parameters=[_int_param("index"), _int_param("size", 1)],
            )
        },
        "/v1/audit/proof/consistency": {
            "get": _op(
                f"{role}_audit_consistency", "RFC 9162 consistency proof.", "audit",
                {**_ok("The proof.", "AuditProof"), **_problems((400, 503))},
                parameters=[_int_param("old"), _int_param("new")],
            )
        },
        "/v1/audit/cosignature": {
            "post": _op(
                f"{role}_audit_cosignature",
                "A witness's cosignature on a checkpoint this log signed.",
                "audit",
                {
                    **_ok("The witnesses whose cosignatures were kept.", "Cosigners", 201),
                    **_problems((400, 401, 404, 413, 415)),
                },
                body_media="text/plain",
            )
        },
    }  # fmt: skip


def _broker_paths() -> dict[str, Any]:
    return {
        "/v1/queries": {
            "post": _op(
                "broker_intake",
                "A signed query with criteria sealed per target; the broker decides per target, "
                "audits, routes and returns one signed aggregate.",
                "broker",
                {
                    **_ok("The signed aggregate answer.", "broker_response"),
                    **_problems((*BODY_ERRORS, 401, 403, 409, 503)),
                },
                body="intake_request",
            )
        },
        "/v1/federation": {
            "get": _op(
                "broker_federation",
                "The broker-signed federation document (DSSE envelope): the current version, "
                "or with `version` an earlier one as it was signed (the version a query's audit "
                "entries name as federation_version).",
                "broker",
                {
                    **_ok("The signed federation document.", "envelope"),
                    "304": {"description": "If-None-Match names the current version."},
                    **_problems((400, 404, 503)),
                },
                parameters=[{**_int_param("version", 1), "required": False}],
            )
        },
    }


def _connector_paths() -> dict[str, Any]:
    return {
        "/v1/provider/queries": {
            "post": _op(
                "connector_provider",
                "A routed query from the broker; answered signed, payload sealed to the requester.",
                "connector",
                {
                    **_ok("The provider's signed answer.", "provider_response"),
                    **_problems((*BODY_ERRORS, 401, 403, 409, 503)),
                },
                body="provider_request",
            )
        },
        "/v1/gateway/queries": {
            "post": _op(
                "connector_gateway",
                "The agency's own systems ask in plain JSON on the agency network; the answer is "
                "verified and plain.",
                "connector",
                {
                    **_ok("The verified answer.", "GatewayResult"),
                    **_problems((*BODY_ERRORS, 401, 403, 502, 503)),
                },
                body="gateway_request",
                security=BEARER,
            )
        },
    }


@functools.lru_cache(maxsize=2)
def _document_json(role: str) -> bytes:
    return dumps(build_document(role))


def build_document(role: str, messages_dir: Path = MESSAGES_DIR) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``role`` ("broker" or "connector")."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    paths = {**(_broker_paths() if role == "broker" else _connector_paths()), **_common_paths(role)}
    title = "IBEX broker API" if role == "broker" else "IBEX connector API"
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": title,
            "version": "1.0",
            "description": "IBEX wire protocol version 1; docs/PROTOCOL.md is normative.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**_load_messages(messages_dir), **EXTRA_SCHEMAS},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Oversight token (broker) or gateway token (connector).",
                }
            },
        },
    }


def init_app(app: Flask, role: str) -> None:
    """Serve the document for ``role`` at ``GET /v1/openapi.json``."""
    body = _document_json(role)

    def openapi() -> Response:
        return Response(body, mimetype="application/json")

    app.add_url_rule(OPENAPI_PATH, "openapi", openapi, methods=["GET"])
