"""The gateway's connections, spoken to byte by byte: request heads read by ``gateway.protocol``,
refused with 400/431/505 where HTTP forbids them, and kept alive across requests whose bodies
the gateway never read."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from gateway.service import GatewayService
from tests.conftest import make_db_uris, service_config
from tests.e2e.support import free_port


@pytest.fixture
def gateway(runner_factory, rabbit_config, tmp_path, request) -> tuple[str, int]:
    """A gateway on SQLite (how a connection is read does not depend on the database)."""
    port = free_port()
    config = service_config(rabbit_config["AMQP_URI"], make_db_uris("sqlite", tmp_path, request))
    runner_factory({**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"}, GatewayService).start()
    return "127.0.0.1", port


def exchange(sock: socket.socket, request: bytes, method: str = "GET") -> http.client.HTTPResponse:
    sock.sendall(request)
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    response.body = response.read()
    return response


def connect(gateway: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(gateway, timeout=10)
    sock.settimeout(10)
    return sock


def closed(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


def test_fields_in_any_case_folded_and_padded_are_read_and_the_connection_kept(gateway) -> None:
    with connect(gateway) as sock:
        first = exchange(
            sock,
            b"GET /health HTTP/1.1\r\nhOsT: x\r\nX-Request-Id:  req-protocol-1 \t\r\n"
            b"X-Actor: first\r\n  folded\r\nACCEPT: */*\r\n\r\n",
        )
        assert first.status == 200 and json.loads(first.body) == {"status": "ok"}
        assert first.getheader("X-Request-Id") == "req-protocol-1"
        second = exchange(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert second.status == 200 and second.getheader("Connection") == "close"
        assert closed(sock)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n", 400, id="space in a name"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space before the colon"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400, id="no colon"),
        pytest.param(b"GET /health HTTP/1.1\r\n folded: first\r\n\r\n", 400, id="continuation first"),
        pytest.param(
            b"POST /students HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n{}",
            400,
            id="two content lengths",
        ),
        pytest.param(
            b"GET /health HTTP/1.1\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(101)) + b"\r\n",
            431,
            id="101 fields",
        ),
        pytest.param(b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="HTTP/2.0"),
        pytest.param(b"GET /health HTTP/1.\xb2\r\nHost: x\r\n\r\n", 400, id="a version not a number"),
        pytest.param(b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400, id="four words"),
        pytest.param(b"POST /students\r\n\r\n", 400, id="HTTP/0.9 POST"),
    ],
)
def test_a_head_http_forbids_is_refused_and_the_connection_closed(gateway, head: bytes, status: int) -> None:
    with connect(gateway) as sock:
        response = exchange(sock, head)
        assert response.status == status
        assert closed(sock)


def test_the_same_content_length_twice_is_one_length(gateway) -> None:
    with connect(gateway) as sock:
        response = exchange(
            sock,
            b"POST /students HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            "POST",
        )
        assert response.status == 401  # past the head: refused for want of a key


def test_a_body_the_gateway_never_read_is_skipped_and_the_next_request_answered(gateway) -> None:
    body = json.dumps({"name": "A", "email": "a@example.org", "course": "x"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with connect(gateway) as sock:
        refused = exchange(
            sock,
            b"POST /students HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            "POST",
        )
        assert refused.status == 401 and json.loads(refused.body)["error"] == "UNAUTHENTICATED"
        refused = exchange(
            sock,
            b"POST /students HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
            "POST",
        )
        assert refused.status == 401
        assert exchange(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status == 200


def test_expect_100_continue_answered_without_the_body_closes_the_connection(gateway) -> None:
    with connect(gateway) as sock:
        response = exchange(
            sock,
            b"POST /students HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            "POST",
        )
        assert response.status == 401  # no "100 Continue" first: the body was never asked for
        assert closed(sock)
