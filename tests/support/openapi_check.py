"""Validate real requests and responses against the served OpenAPI document."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:ibex:openapi"


def _validator(doc: dict[str, Any], pointer: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource(contents=doc, specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


def check_request(doc: dict[str, Any], path: str, method: str, body: Any) -> None:
    pointer = f"/paths/{_escape(path)}/{method}/requestBody/content/application~1json/schema"
    _validator(doc, pointer).validate(body)


def check_response(
    doc: dict[str, Any], path: str, method: str, status: int, media: str, body: Any
) -> None:
    """Fail unless ``status`` is documented for the operation with ``media`` and ``body`` fits."""
    op = doc["paths"][path][method]
    assert str(status) in op["responses"], f"{method} {path} does not document {status}"
    content = op["responses"][str(status)]["content"]
    assert media in content, f"{method} {path} {status} does not document {media}"
    pointer = f"/paths/{_escape(path)}/{method}/responses/{status}/content/{_escape(media)}/schema"
    _validator(doc, pointer).validate(body)


def check_flask_response(doc: dict[str, Any], path: str, method: str, resp: Any) -> None:
    """A Flask test-client or httpx response against the document."""
    media = resp.headers["Content-Type"].split(";")[0].strip()
    if media.startswith("text/"):
        body: Any = resp.text
    else:
        body = resp.json() if callable(resp.json) else resp.json
    check_response(doc, path, method, resp.status_code, media, body)
