"""HTTP plumbing shared by the broker and the connector: problem+json errors and body reading.

Every :class:`~ibex.errors.IbexError` becomes an RFC 9457 ``application/problem+json`` response
with its stable ``code``. Anything else becomes a 500 that says nothing about internals; the
exception is logged with the request id only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ibex.errors import BadInput, IbexError, InputTooLarge, UnsupportedMediaType
from ibex.jsonio import dumps, loads_strict

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("ibex.web")

_HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    resp = Response(dumps(problem), status=int(problem["status"]), mimetype=PROBLEM_JSON)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json")


def request_id() -> str:
    rid = getattr(g, "request_id", None)
    if rid is None:
        rid = uuid.uuid4().hex
        g.request_id = rid
    return str(rid)


def register_error_handlers(app: Flask) -> None:
    """Render every error as problem+json; a 500 leaks nothing."""

    @app.before_request
    def _assign_request_id() -> None:
        request_id()

    @app.after_request
    def _echo_request_id(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = request_id()
        return resp

    @app.errorhandler(IbexError)
    def _ibex_error(exc: IbexError) -> Response:
        return problem_response(exc.to_problem(instance=request.path))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status >= 500:
            return _safe_500()
        problem = {
            "type": "about:blank",
            "title": exc.name,
            "status": status,
            "detail": exc.description or exc.name,
            "code": _HTTP_CODES.get(status, f"http-{status}"),
            "instance": request.path,
        }
        headers = {}
        if status == 405 and exc.get_response().headers.get("Allow"):
            headers["Allow"] = exc.get_response().headers["Allow"]
        return problem_response(problem, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error(
            "unhandled error",
            extra={"request_id": request_id(), "error_type": type(exc).__name__},
            exc_info=exc,
        )
        return _safe_500()


def _safe_500() -> Response:
    return problem_response(
        {
            "type": "about:blank",
            "title": "Internal error",
            "status": 500,
            "detail": f"the server could not complete the request (request id {request_id()})",
            "code": "internal-error",
        }
    )


MAX_INT_ARG = (1 << 48) - 1


def int_arg(name: str, *, minimum: int = 0) -> int:
    """The query parameter ``name``, given exactly once, as a decimal integer without leading
    zeroes from ``minimum`` to 2**48 - 1; anything else is a 400 problem."""
    values = request.args.getlist(name)
    if len(values) != 1:
        raise BadInput(f"query parameter {name!r} must be given exactly once")
    text = values[0]
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > 15
        or (len(text) > 1 and text[0] == "0")
    ):
        raise BadInput(f"query parameter {name!r} must be a decimal integer without leading zeroes")
    value = int(text)
    if not minimum <= value <= MAX_INT_ARG:
        raise BadInput(f"query parameter {name!r} must be from {minimum} to {MAX_INT_ARG}")
    return value


def only_args(*names: str) -> None:
    """Refuse (400) a query parameter other than ``names``."""
    extra = sorted(set(request.args) - set(names))
    if extra:
        raise BadInput(f"unknown query parameter {extra[0][:40]!r}")


def read_body(max_bytes: int, *, content_types: tuple[str, ...] = ("application/json",)) -> bytes:
    """The raw request body, after checking its media type and size (without reading past it)."""
    mimetype = request.mimetype or ""
    if mimetype not in content_types:
        raise UnsupportedMediaType(
            f"Content-Type must be {' or '.join(content_types)}, not {mimetype or 'missing'}"
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise InputTooLarge(f"the body is {length} bytes; the limit is {max_bytes}")
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputTooLarge(f"the body is larger than the limit of {max_bytes} bytes")
    if not data:
        raise BadInput("the request body is empty")
    return bytes(data)


def read_json(max_bytes: int) -> Any:
    return loads_strict(read_body(max_bytes), max_bytes=max_bytes, what="request body")
