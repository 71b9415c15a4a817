"""problem+json rendering: stable codes, every schema error, and a 500 that leaks nothing."""

from __future__ import annotations

from flask import Flask

from ibex.errors import FieldError, SchemaValidationError
from ibex.web import json_response, read_json, register_error_handlers


def _app() -> Flask:
    app = Flask("t")
    register_error_handlers(app)

    @app.post("/echo")
    def echo():  # type: ignore[no-untyped-def]
        return json_response({"got": read_json(100)})

    @app.get("/schema")
    def schema():  # type: ignore[no-untyped-def]
        raise SchemaValidationError(
            "2 errors", errors=[FieldError("/a", "wrong type"), FieldError("/b/0", "too long")]
        )

    @app.get("/boom")
    def boom():  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail /etc/ibex/keys")

    return app


def test_ok_and_request_id() -> None:
    resp = _app().test_client().post("/echo", json={"x": 1})
    assert resp.status_code == 200
    assert resp.get_json() == {"got": {"x": 1}}
    assert len(resp.headers["X-Request-Id"]) == 32


def test_wrong_media_type() -> None:
    resp = _app().test_client().post("/echo", data="x=1", content_type="text/plain")
    assert resp.status_code == 415
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["code"] == "unsupported-media-type"


def test_too_large_and_malformed() -> None:
    client = _app().test_client()
    resp = client.post("/echo", data="[" + "1," * 100 + "1]", content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["code"] == "payload-too-large"
    resp = client.post("/echo", data='{"a":1,"a":2}', content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["code"] == "bad-input"
    resp = client.post("/echo", data="", content_type="application/json")
    assert resp.get_json()["detail"] == "the request body is empty"


def test_schema_errors_carry_every_pointer() -> None:
    problem = _app().test_client().get("/schema").get_json()
    assert problem["status"] == 422
    assert problem["code"] == "schema-invalid"
    assert [e["pointer"] for e in problem["errors"]] == ["/a", "/b/0"]
    assert problem["type"].endswith("/schema-invalid")


def test_500_leaks_nothing() -> None:
    app = _app()
    app.logger.disabled = True
    resp = app.test_client().get("/boom")
    assert resp.status_code == 500
    body = resp.get_data(as_text=True)
    assert "secret" not in body and "RuntimeError" not in body
    assert resp.get_json()["code"] == "internal-error"


def test_404_and_405_are_problems() -> None:
    client = _app().test_client()
    assert client.get("/nope").get_json()["code"] == "not-found"
    resp = client.get("/echo")
    assert resp.get_json()["code"] == "method-not-allowed"
    assert "POST" in resp.headers["Allow"]
