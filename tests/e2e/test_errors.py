"""Every kind of bad request, and every kind of backend trouble, gets its HTTP
status and a JSON error body; never a 500, never a traceback (System.request
checks that on every answer)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.support import (
    MAX_BODY_BYTES,
    READY_TIMEOUT,
    RPC_TIMEOUT,
    System,
    amqp_username,
    assert_error,
    bearer,
    free_port,
    process_env,
    rabbit_vhost,
    start_process,
    stop_processes,
    vhost_uri,
)

UNKNOWN_ID = 999_999_999
JSON = {"Content-Type": "application/json"}
STUDENT = {"name": "Someone", "email": "someone@example.org", "course": "x"}


def chunked(body: bytes) -> Callable[[], Iterator[bytes]]:
    """A body sent with ``Transfer-Encoding: chunked``: the gateway learns its size only by reading."""
    return lambda: iter([body[i : i + 1024] for i in range(0, len(body), 1024)])


def case(method: str, path: str, status: int, code: str | set[str], details: set[str], id: str, **kwargs: Any):
    """One bad request: what is sent (``kwargs`` for ``requests``) and the error it must get."""
    return pytest.param(method, path, kwargs, status, code, details, id=id)


LONG_NAME_STUDENT = json.dumps({**STUDENT, "name": "x" * MAX_BODY_BYTES}).encode()
BAD_EMAIL_STUDENT = json.dumps({**STUDENT, "email": "@"}).encode()
ANY_NOT_FOUND = {"STUDENT_NOT_FOUND", "NOT_FOUND"}

# fmt: off
BAD_REQUESTS = [
    case("POST", "/students", 400, "MALFORMED_JSON", set(), data=b'{"name": "Ada", ', headers=JSON, id="bad-json"),
    case("POST", "/students", 400, "MALFORMED_JSON", set(), data=b"\xff\xfe{}", headers=JSON, id="not-utf8"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"email", "course"},
         json={"name": "Ada", "email": "not-an-email"}, id="schema-violation"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"_schema"}, json=[STUDENT], id="not-an-object"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"admin"}, json={**STUDENT, "admin": True}, id="unknown-field"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"email"}, data=chunked(BAD_EMAIL_STUDENT), headers=JSON,
         id="chunked-body-is-read"),
    case("POST", "/students", 415, "UNSUPPORTED_MEDIA_TYPE", set(), data="name=Ada",
         headers={"Content-Type": "text/plain"}, id="text-plain"),
    case("POST", "/students", 413, "PAYLOAD_TOO_LARGE", {"max_bytes"}, data=LONG_NAME_STUDENT, headers=JSON,
         id="too-large"),
    case("POST", "/students", 413, "PAYLOAD_TOO_LARGE", {"max_bytes"}, data=chunked(LONG_NAME_STUDENT), headers=JSON,
         id="too-large-chunked"),
    case("GET", f"/students/{UNKNOWN_ID}", 404, "STUDENT_NOT_FOUND", {"student_id"}, id="unknown-student"),
    case("POST", f"/students/{UNKNOWN_ID}/status", 404, "STUDENT_NOT_FOUND", {"student_id"},
         json={"status": "active"}, id="unknown-student-status"),
    case("GET", f"/students/{UNKNOWN_ID}/history", 404, "STUDENT_NOT_FOUND", {"student_id"},
         id="unknown-student-history"),
    case("GET", f"/students/{2**31}", 404, ANY_NOT_FOUND, set(), id="student-id-over-int32"),
    case("GET", f"/students/{10**20}", 404, ANY_NOT_FOUND, set(), id="student-id-over-int64"),
    case("POST", f"/students/{10**20}/status", 404, ANY_NOT_FOUND, set(), json={"status": "active"},
         id="status-student-id-over-int64"),
    case("GET", "/no/such/route", 404, "NOT_FOUND", set(), id="unknown-route"),
    case("GET", "/students/abc", 404, "NOT_FOUND", set(), id="student-id-text"),
    case("GET", "/students/0", 404, "NOT_FOUND", set(), id="student-id-zero"),
    case("PATCH", "/students/0", 404, "NOT_FOUND", set(), json={"name": "x"}, id="patch-student-id-zero"),
    case("POST", "/students/0/status", 404, "NOT_FOUND", set(), json={"status": "active"},
         id="status-student-id-zero"),
    case("PUT", "/students/1", 405, "METHOD_NOT_ALLOWED", {"allowed"}, json=STUDENT, id="put-student"),
    case("DELETE", "/students", 405, "METHOD_NOT_ALLOWED", {"allowed"}, id="delete-collection"),
    case("POST", "/students/1/status", 422, "VALIDATION_ERROR", {"status"}, json={"status": "graduated"},
         id="unknown-status"),
    case("POST", "/students/1/status", 422, "VALIDATION_ERROR", {"Idempotency-Key"}, json={"status": "active"},
         headers={"Idempotency-Key": "k" * 201}, id="long-idempotency-key"),
    case("GET", "/students?limit=0", 422, "VALIDATION_ERROR", {"limit"}, id="limit-0"),
    case("GET", "/students?limit=abc", 422, "VALIDATION_ERROR", {"limit"}, id="limit-abc"),
    case("GET", "/students?limit=100000", 422, "VALIDATION_ERROR", {"limit"}, id="limit-huge"),
    case("GET", "/students?status=bogus", 422, "VALIDATION_ERROR", {"status"}, id="status-bogus"),
    case("GET", "/students?cursor=garbage", 422, "VALIDATION_ERROR", {"cursor"}, id="cursor-garbage"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"name"}, json={**STUDENT, "name": "Ana\u0086"},
         id="control-character-in-name"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"course"}, json={**STUDENT, "course": "Bio\u009flogy"},
         id="control-character-in-course"),
    case("POST", "/students", 422, "VALIDATION_ERROR", {"name"}, json={**STUDENT, "name": " "}, id="blank-name"),
    case("POST", "/students/1/status", 422, "VALIDATION_ERROR", {"X-Actor"}, json={"status": "active"},
         headers={"X-Actor": "a" * 201}, id="long-actor"),
    case("POST", "/status-requests/bulk", 422, "VALIDATION_ERROR", {"X-Actor"}, data="student_id,status\n1,active\n",
         headers={"Content-Type": "text/csv", "X-Actor": "a" * 201}, id="bulk-long-actor"),
    case("PATCH", "/students/1", 422, "VALIDATION_ERROR", {"If-Match"}, json={"name": "x"}, headers={"If-Match": ""},
         id="empty-if-match"),
    case("GET", "/status-requests/bulk", 405, "METHOD_NOT_ALLOWED", {"allowed"}, id="bulk-is-not-a-request-id"),
    case("GET", "/students?colour=red", 422, "VALIDATION_ERROR", {"colour"}, id="unknown-parameter"),
    case("GET", "/students/1/history?limit=0", 422, "VALIDATION_ERROR", {"limit"}, id="history-limit-0"),
]
# fmt: on


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code", "detail_keys"), BAD_REQUESTS)
def test_bad_request_gets_json_error(system: System, method, path, kwargs, status, code, detail_keys) -> None:
    if callable(kwargs.get("data")):
        kwargs = {**kwargs, "data": kwargs["data"]()}  # a fresh generator per run
    details = assert_error(system.request(method, path, **kwargs), status, code)
    assert detail_keys <= set(details), details


def test_method_not_allowed_names_the_allowed_methods(system: System) -> None:
    response = system.request("PUT", "/students/1", json=STUDENT)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_conflicts_and_preconditions(system: System, unique: str) -> None:
    student = system.create_student(unique)
    duplicate = system.post("/students", json={**STUDENT, "email": student["email"].upper()})
    assert assert_error(duplicate, 409, "EMAIL_ALREADY_EXISTS") == {"email": student["email"]}

    path = f"/students/{student['id']}"
    stale = system.patch(path, json={"name": "Late"}, headers={"If-Match": f'"{student["version"] + 1}"'})
    details = assert_error(stale, 412, "VERSION_MISMATCH")
    assert details["current_version"] == student["version"]
    assert_error(system.patch(path, json={"name": "Late"}, headers={"If-Match": "soon"}), 422, "VALIDATION_ERROR")
    assert_error(system.patch(path, json={}), 422, "VALIDATION_ERROR")
    other = system.create_student(f"{unique}-other")
    taken = system.patch(path, json={"email": other["email"].upper()})
    assert_error(taken, 409, "EMAIL_ALREADY_EXISTS")
    assert system.get(path).json() == student  # nothing changed


def test_health_answers(system: System) -> None:
    response = system.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_stalled_backend_gives_504_quickly(system: System) -> None:
    students = system.processes["students"]
    students.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        # a student the gateway's copy does not hold: the read asks the students service
        details = assert_error(system.get(f"/students/{UNKNOWN_ID}"), 504, "BACKEND_TIMEOUT")
        assert time.monotonic() - started < RPC_TIMEOUT + 2
        assert details["service"] == "students"

        started = time.monotonic()
        details = assert_error(system.get("/ready"), 503, "SERVICE_UNAVAILABLE")
        assert time.monotonic() - started < 2 * READY_TIMEOUT + 2
        assert details["checks"] == {"students": "BACKEND_TIMEOUT", "status": "ok"}
    finally:
        students.send_signal(signal.SIGCONT)
    system.wait_ready()
    assert_error(system.get(f"/students/{UNKNOWN_ID}"), 404, "STUDENT_NOT_FOUND")


def test_gateway_without_services_gives_503_quickly(system: System, rabbit_manager, amqp_uri, tmp_path) -> None:
    with rabbit_vhost(rabbit_manager, amqp_username(amqp_uri)) as vhost:
        port = free_port()
        db_uris = {
            "students:StudentsBase": system.env["STUDENTS_DB_URI"],
            "status:StatusBase": system.env["STATUS_DB_URI"],
            "gateway:GatewayBase": system.db_uris["gateway:GatewayBase"],
        }
        env = process_env(vhost_uri(amqp_uri, vhost), db_uris, port)
        lonely = System(
            backend=system.backend,
            base_url=f"http://127.0.0.1:{port}",
            vhost=vhost,
            env=env,
            log_dir=tmp_path,
            db_uris=db_uris,
            admin_key=system.admin_key,
        )
        lonely.http.headers.update(bearer(system.admin_key))
        lonely.processes["gateway"] = start_process("gateway.service", env, lonely.log_path("gateway"))
        try:
            lonely.wait_for("/health")
            started = time.monotonic()
            details = assert_error(lonely.get("/students/1"), 503, "SERVICE_UNAVAILABLE")
            assert details == {"service": "students"}
            details = assert_error(lonely.get("/ready"), 503, "SERVICE_UNAVAILABLE")
            assert details["checks"] == {"students": "SERVICE_UNAVAILABLE", "status": "SERVICE_UNAVAILABLE"}
            accepted = lonely.post("/students/1/status", json={"status": "active"})
            assert_error(accepted, 503, "SERVICE_UNAVAILABLE")
            assert time.monotonic() - started < 3, "503s should not wait for a timeout"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{lonely.log_tails()}") from None
        finally:
            lonely.http.close()
            stop_processes(lonely.processes)
