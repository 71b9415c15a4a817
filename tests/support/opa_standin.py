"""A STAND-IN for an Open Policy Agent server, for tests only.

No package registry reachable here ships the OPA server binary, so the OPA engine is tested
against this small HTTP server that speaks the part of OPA's REST API the engine uses:

- ``PUT /v1/policies/<id>`` with a Rego module as the body (200, ``{}``);
- ``PUT /v1/data/<path>`` with a JSON document as the body (204);
- ``POST /v1/data/<path>`` with ``{"input": ...}`` → ``{"result": <value>}``, or ``{}`` when the
  value is undefined (as OPA does);
- ``DELETE /v1/policies/<id>`` (200, ``{}``);
- ``GET /v1/policies`` (the client's connection check);
- ``GET /v1/data/system/bundles`` (the bundles it was started with, and their manifests).

State changes only through HTTP, so that the regorus engine is made, used and dropped in the
server's thread (a regorus engine must not cross threads, not even to be freed).

It is NOT OPA: it evaluates with regorus, the same interpreter as the embedded engine, so it
proves the wire protocol and the engine wrapper, not a third Rego implementation (the regopy
differential test does that). It serves one request at a time on a loopback port, in one thread,
because a regorus engine cannot be used from another thread.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import regorus


class OpaStandIn:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is where it listens."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.requests: list[str] = []
        # Bundles "loaded at start-up" (as `opa run --bundle` would): name -> {"manifest": ...}.
        self.bundles: dict[str, Any] = {}
        self._engine: Any = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, value: Any = None) -> None:
                body = b"" if value is None else json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                standin.requests.append(f"GET {self.path}")
                if self.path.rstrip("/") == "/v1/policies":
                    self._reply(200, {"result": [{"id": k} for k in standin.modules]})
                elif self.path.rstrip("/") == "/v1/data/system/bundles":
                    self._reply(200, {"result": standin.bundles})
                else:
                    self._reply(404, {"code": "resource_not_found", "message": self.path})

            def do_PUT(self) -> None:
                standin.requests.append(f"PUT {self.path}")
                body = self._body()
                if self.path.startswith("/v1/policies/"):
                    standin.modules[self.path.removeprefix("/v1/policies/")] = body.decode()
                    standin._engine = None
                    self._reply(200, {})
                elif self.path.startswith("/v1/data/"):
                    node = standin.data
                    parts = self.path.removeprefix("/v1/data/").strip("/").split("/")
                    for part in parts[:-1]:
                        node = node.setdefault(part, {})
                    node[parts[-1]] = json.loads(body)
                    standin._engine = None
                    self._reply(204)
                else:
                    self._reply(404, {"code": "resource_not_found", "message": self.path})

            def do_DELETE(self) -> None:
                standin.requests.append(f"DELETE {self.path}")
                standin.modules.pop(self.path.removeprefix("/v1/policies/"), None)
                standin._engine = None
                self._reply(200, {})

            def do_POST(self) -> None:
                standin.requests.append(f"POST {self.path}")
                if not self.path.startswith("/v1/data/"):
                    self._reply(404, {"code": "resource_not_found", "message": self.path})
                    return
                request = json.loads(self._body() or b"{}")
                rule = "data." + self.path.removeprefix("/v1/data/").strip("/").replace("/", ".")
                try:
                    engine = standin.engine()
                    engine.set_input(request.get("input", {}))
                    value = engine.eval_rule(rule)
                except RuntimeError as exc:
                    if "not a valid rule path" not in str(exc):
                        self._reply(500, {"code": "internal_error", "message": str(exc)})
                        return
                    value = None  # OPA answers {} for a document nobody defined
                except Exception as exc:
                    self._reply(500, {"code": "internal_error", "message": str(exc)})
                    return
                self._reply(200, {} if value is None else {"result": value})

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.server.serve_forever()
        self._engine = None  # dropped here, in the thread that made it

    def engine(self) -> Any:
        if self._engine is None:
            engine = regorus.Engine()
            for name, text in sorted(self.modules.items()):
                engine.add_policy(name, text)
            engine.add_data(self.data)
            self._engine = engine
        return self._engine

    def start(self) -> OpaStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
