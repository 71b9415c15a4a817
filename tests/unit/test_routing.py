"""The broker's fan-out client against a real HTTP server on loopback: every way a partner can
answer, or not, becomes one outcome, and the limits hold."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from broker.routing import Router, Send


class _Partner(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16
    connections: ClassVar[set[int]] = set()

    def do_POST(self) -> None:
        _Partner.connections.add(self.client_address[1])
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        if self.path.startswith("/big"):
            out = b"x" * 300_000
        elif self.path.startswith("/teapot"):
            self.send_response(418)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            out = b"echo:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the router hanging up on an oversized answer is expected here


@pytest.fixture
def partner() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Partner)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Partner.connections.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_kind_of_partner_becomes_one_outcome_in_order(partner: str) -> None:
    router = Router(max_workers=4, max_response_bytes=100_000)
    sends = [
        Send("A", partner, b"hello"),
        Send("B", partner + "/slow", b"late"),
        Send("C", partner + "/big", b"huge"),
        Send("D", f"http://127.0.0.1:{_closed_port()}", b"nobody"),
        Send("E", partner + "/teapot", b"tea"),
    ]
    out = router.fan_out(sends, timeout=0.5, deadline=5.0)
    router.close()
    assert [o.target for o in out] == ["A", "B", "C", "D", "E"]
    by = {o.target: o for o in out}
    assert (by["A"].status, by["A"].http_status, by["A"].body) == ("ok", 200, b"echo:hello")
    assert by["B"].status == "timeout" and by["B"].body is None
    assert by["C"].status == "http-error" and by["C"].body is None
    assert "larger than the limit" in by["C"].detail
    assert by["D"].status == "unreachable"
    assert (by["E"].status, by["E"].http_status) == ("http-error", 418)


def test_the_overall_deadline_cuts_a_partner_short(partner: str) -> None:
    router = Router(max_workers=2)
    started = time.monotonic()
    (out,) = router.fan_out([Send("B", partner + "/slow", b"x")], timeout=10.0, deadline=0.3)
    assert time.monotonic() - started < 1.2
    assert out.status == "timeout" and "deadline" in out.detail
    router.close()


def test_connections_are_kept_alive_between_queries(partner: str) -> None:
    router = Router(max_workers=1)
    for i in range(5):
        (out,) = router.fan_out([Send("A", partner, b"%d" % i)], timeout=2.0, deadline=5.0)
        assert out.status == "ok" and out.body == b"echo:%d" % i
    router.close()
    assert len(_Partner.connections) == 1  # one client port: one pooled connection


def test_an_oversized_answer_does_not_poison_the_pool(partner: str) -> None:
    router = Router(max_workers=1, max_response_bytes=1000)
    (big,) = router.fan_out([Send("C", partner + "/big", b"x")], timeout=2.0, deadline=5.0)
    assert big.status == "http-error"
    (ok,) = router.fan_out([Send("A", partner, b"after")], timeout=2.0, deadline=5.0)
    assert (ok.status, ok.body) == ("ok", b"echo:after")
    router.close()
