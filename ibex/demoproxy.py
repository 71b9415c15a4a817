"""A loopback HTTP relay that can delay or alter what passes through: fault injection for the
demo and the tests (a slow partner, a tampered answer on the wire), with real processes on both
sides. It is never part of a production path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Tamper = Callable[[str, bytes], bytes]


class Relay:
    """Forwards every request to ``upstream``; ``delay`` seconds before answering and
    ``tamper(path, body)`` applied to response bodies when set."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = 0.0
        self.tamper: Tamper | None = None
        self.requests = 0
        self.last_request: tuple[str, bytes] | None = None  # (path, body): for replay tests
        relay = self
        client = httpx.Client(trust_env=False, timeout=60.0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the relay must not log bodies or paths with parameters

            def _forward(self) -> None:
                relay.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                relay.last_request = (self.path, body)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                try:
                    resp = client.request(
                        self.command, relay.upstream + self.path, content=body, headers=headers
                    )
                    status, data = resp.status_code, resp.content
                    ctype = resp.headers.get("Content-Type", "application/octet-stream")
                except httpx.HTTPError:
                    status, data, ctype = 502, b"", "text/plain"
                if relay.delay:
                    time.sleep(relay.delay)
                if relay.tamper is not None and status == 200:
                    data = relay.tamper(self.path, data)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up waiting (a timeout is the point of a delay)

            do_GET = _forward
            do_POST = _forward

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._client = client

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Relay:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._client.close()
