"""The benchmarks' HTTP load generator against a real HTTP server: what each client sends, and how
it reads every way an answer may end (a length, chunks, a closed connection), counting what came."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.load import Call, run_load


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict, bytes]] = []
    connections: set[int] = set()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Handler.seen.append((self.command, self.path, dict(self.headers), body))
        Handler.connections.add(self.client_address[1])
        if self.path == "/chunked":
            self.send_response(202)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a":', b"1}"):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/close":
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"{}")
            self.close_connection = True
        elif self.path == "/drop":  # the connection closed, no answer
            self.close_connection = True
        elif self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            answer = json.dumps({"echo": body.decode()}).encode()
            self.send_response(200 if self.command == "GET" else 202)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen, Handler.connections = [], set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_each_client_sends_its_plan_in_order_over_one_kept_alive_connection(server):
    plans = [[Call("POST", f"/students/{c}/status", {"status": "active", "n": n}) for n in range(3)] for c in (1, 2)]

    result = run_load(server, plans, 202, headers={"Authorization": "Bearer k"})

    assert result.ok == 6 and not result.failures() and len(result.latencies) == 6
    posts = [(path, json.loads(body)) for method, path, headers, body in Handler.seen if method == "POST"]
    for client in (1, 2):
        assert [body["n"] for path, body in posts if path == f"/students/{client}/status"] == [0, 1, 2]
    assert all(headers["Authorization"] == "Bearer k" for _, _, headers, _ in Handler.seen)
    assert all(headers["Content-Type"] == "application/json" for m, _, headers, _ in Handler.seen if m == "POST")
    assert len(Handler.connections) == 2, "one connection per client, the warm-up's kept for the plan"
    assert result.finished > result.started


def test_chunked_closing_and_other_answers_are_read_whole_and_counted(server):
    plan = [
        Call("GET", "/chunked"),
        Call("GET", "/close"),
        Call("POST", "/missing", {}),
        Call("POST", "/echo"),  # no body: an empty one, announced
        Call("GET", "/chunked"),
    ]

    result = run_load(server, [plan], 202)

    assert result.ok == 4 and result.statuses[404] == 1
    assert result.failures() == "1 x 404"
    assert [path for _, path, _, _ in Handler.seen] == ["/health", *(call.path for call in plan)]
    assert len(Handler.connections) == 2, "after the server closed it, the next request opened another"


def test_a_connection_dropped_without_an_answer_is_an_error_counted_and_the_client_goes_on(server):
    plan = [Call("GET", "/echo"), Call("GET", "/drop"), Call("GET", "/echo")]

    result = run_load(server, [plan], 200)

    assert result.ok == 2 and result.errors == {"IncompleteReadError": 1}
    assert result.failures() == "1 x IncompleteReadError" and len(result.latencies) == 2
    assert len(Handler.connections) == 2, "the request after the drop went over a new connection"


def test_nobody_listening_fails_before_the_measured_window(server):
    with pytest.raises(OSError):
        run_load("http://127.0.0.1:9", [[Call("GET", "/echo")]], 200, timeout=2)
