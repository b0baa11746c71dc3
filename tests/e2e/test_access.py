"""Access control over HTTP: keys and scopes on every route, revocation across gateways,
expiry, rate limits, the audit trail, and no key kept anywhere."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, inspect, text, update

from gateway.access import keys
from gateway.access.models import ApiKey
from gateway.entrypoints import PUBLIC, route_template
from gateway.openapi import routes
from gateway.service import GatewayService
from tests.e2e.support import (
    ROOT,
    System,
    assert_error,
    bearer,
    free_port,
    poll,
    start_process,
    stop_processes,
)

ROUTES = {(route.method, route_template(route.rule)): route.scope for route in routes(GatewayService)}
REVOCATION_DEADLINE = 5.0  # seconds: the promise


def call(system: System, key: str | None, method: str, path: str, **kwargs) -> requests.Response:
    headers = {**kwargs.pop("headers", {}), **(bearer(key) if key else {})}
    with requests.Session() as session:  # not system.http: it sends the tests' admin key
        response = session.request(method, system.base_url + path, headers=headers, timeout=10, **kwargs)
    assert response.status_code != 500, f"{method} {path} -> 500: {response.text}"
    return response


@pytest.fixture(scope="module")
def scoped_keys(system: System) -> dict[str, str]:
    """One key per scope, holding only that scope."""
    scopes = {scope for scope in ROUTES.values() if scope != PUBLIC}
    return {scope: system.create_key(f"only {scope}", [scope])[1] for scope in scopes}


@pytest.fixture(scope="module")
def resources(system: System) -> dict:
    """What the routes' successful calls need: students, a request, a job, a certificate, a key."""
    unique = f"access-{time.monotonic_ns()}"
    student = system.create_student(unique)
    doomed = system.create_student(f"doomed-{unique}")
    certified = system.create_student(f"certified-{unique}")
    system.request_status(certified["id"], "active")
    completion = system.post(f"/students/{certified['id']}/completion").json()
    assert system.settled_request(completion["request_id"])["state"] == "applied"
    certificates = poll(
        lambda: system.get(f"/students/{certified['id']}/certificates").json(), lambda found: len(found) == 1
    )
    request = system.request_status(student["id"], "active")
    job = system.post(
        "/status-requests/bulk",
        data=f"student_id,status\n{student['id']},active\n",
        headers={"Content-Type": "text/csv"},
    ).json()
    key, _ = system.create_key(f"to revoke {unique}", ["students:read"])
    return {
        "student": student,
        "doomed": doomed,
        "request_id": request["request_id"],
        "job_id": job["job_id"],
        "code": certificates[0]["code"],
        "key_id": key["id"],
        "unique": unique,
    }


def successful_calls(r: dict) -> dict[tuple[str, str], tuple[str, dict, int]]:
    """(method, route) → (path, request options, the status a key with the scope gets)."""
    sid, unique = r["student"]["id"], r["unique"]
    return {
        ("GET", "/health"): ("/health", {}, 200),
        ("GET", "/ready"): ("/ready", {}, 200),
        ("GET", "/openapi.json"): ("/openapi.json", {}, 200),
        ("GET", "/docs"): ("/docs", {}, 200),
        ("GET", "/docs/messaging"): ("/docs/messaging", {}, 200),
        ("GET", "/asyncapi.json"): ("/asyncapi.json", {}, 200),
        ("GET", "/static/{name}"): ("/static/vendor/README.md", {}, 200),
        ("POST", "/students"): (
            "/students",
            {"json": {"name": "N", "email": f"new-{unique}@example.org", "course": "c"}},
            201,
        ),
        ("GET", "/students"): ("/students", {}, 200),
        ("GET", "/students/{student_id}"): (f"/students/{sid}", {}, 200),
        ("PATCH", "/students/{student_id}"): (f"/students/{sid}", {"json": {"course": "changed"}}, 200),
        ("DELETE", "/students/{student_id}"): (f"/students/{r['doomed']['id']}", {}, 204),
        ("POST", "/students/{student_id}/status"): (f"/students/{sid}/status", {"json": {"status": "active"}}, 202),
        ("POST", "/students/{student_id}/completion"): (f"/students/{sid}/completion", {}, 202),
        ("POST", "/api/v1/certificate/"): (
            "/api/v1/certificate/",
            {"json": {"name": "L", "email": f"legacy-{unique}@example.org", "course": "c"}},
            202,
        ),
        ("GET", "/status-requests/{request_id}"): (f"/status-requests/{r['request_id']}", {}, 200),
        ("GET", "/students/{student_id}/history"): (f"/students/{sid}/history", {}, 200),
        ("POST", "/status-requests/bulk"): (
            "/status-requests/bulk",
            {"data": f"student_id,status\n{sid},active\n", "headers": {"Content-Type": "text/csv"}},
            202,
        ),
        ("GET", "/jobs/{job_id}"): (f"/jobs/{r['job_id']}", {}, 200),
        ("GET", "/certificates/{code}"): (f"/certificates/{r['code']}", {}, 200),
        ("GET", "/certificates/{code}.pdf"): (f"/certificates/{r['code']}.pdf", {}, 200),
        ("GET", "/certificates/{code}/credential"): (f"/certificates/{r['code']}/credential", {}, 200),
        ("GET", "/certificates/{code}/credential.json"): (f"/certificates/{r['code']}/credential.json", {}, 200),
        ("GET", "/.well-known/jwks.json"): ("/.well-known/jwks.json", {}, 200),
        ("GET", "/credentials/status/{list_id}"): ("/credentials/status/1", {}, 200),
        ("GET", "/credentials/status/{list_id}.json"): ("/credentials/status/1.json", {}, 200),
        ("GET", "/issuer"): ("/issuer", {}, 200),
        ("POST", "/certificates/{code}/revocation"): (
            f"/certificates/{r['code']}/revocation",
            {"json": {"reason": "issued in error"}},
            200,
        ),
        ("GET", "/students/{student_id}/certificates"): (f"/students/{sid}/certificates", {}, 200),
        ("POST", "/keys"): ("/keys", {"json": {"name": f"made over http {unique}", "scopes": ["status:read"]}}, 201),
        ("GET", "/keys"): ("/keys", {}, 200),
        ("GET", "/keys/{key_id}"): (f"/keys/{r['key_id']}", {}, 200),
        ("DELETE", "/keys/{key_id}"): (f"/keys/{r['key_id']}", {}, 200),
        ("GET", "/audit"): ("/audit", {}, 200),
    }


def test_every_route_has_a_call_here():
    assert set(
        successful_calls(
            {
                "student": {"id": 1},
                "doomed": {"id": 2},
                "unique": "",
                **dict.fromkeys(("request_id", "job_id", "code", "key_id"), "x"),
            }
        )
    ) == set(ROUTES)


def test_every_route_asks_for_a_key_with_its_scope(system: System, scoped_keys, resources):
    for (method, route), (path, options, status) in successful_calls(resources).items():
        scope = ROUTES[(method, route)]
        if scope == PUBLIC:
            response = call(system, None, method, path, **options)
            assert response.status_code == status, f"{method} {route} is public: {response.text}"
            continue
        refused = call(system, None, method, path, **options)
        assert_error(refused, 401, "UNAUTHENTICATED")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")

        other = next(key for granted, key in scoped_keys.items() if granted != scope)
        details = assert_error(call(system, other, method, path, **options), 403, "INSUFFICIENT_SCOPE")
        assert details == {"required_scope": scope}, (method, route)

        allowed = call(system, scoped_keys[scope], method, path, **options)
        assert allowed.status_code == status, f"{method} {route} with {scope}: {allowed.text}"
        assert all(name in allowed.headers for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))


def test_an_admin_key_has_every_scope(system: System):
    _, key = system.create_key("all", ["admin"])
    for path in ("/students", "/audit", "/keys"):
        assert call(system, key, "GET", path).status_code == 200


def test_the_openapi_document_lists_each_operations_scope(system: System):
    spec = system.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for (method, route), scope in ROUTES.items():
        operation = spec["paths"][route][method.lower()]
        if scope == PUBLIC:
            assert operation["security"] == [], route
        else:
            assert operation["security"] == [{"apiKey": [scope]}], route
            assert {"401", "403", "429"} <= set(map(str, operation["responses"])), route


@pytest.mark.parametrize(
    "authorization",
    [
        "msk_x",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer msk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb_cccccc",  # a well-formed shape, a wrong checksum
        "Bearer " + "A" * 8192,  # 8 KiB
        "Bearer msk_ação".encode(),  # non-ASCII, as UTF-8 bytes
        "Bearer \xff\xfe".encode("latin-1"),
    ],
    ids=["no-scheme", "scheme-only", "empty", "basic", "garbage", "bad-checksum", "huge", "utf8", "latin1"],
)
def test_bad_authorization_headers_are_401_never_500(system: System, authorization):
    response = call(system, None, "GET", "/students", headers={"Authorization": authorization})
    assert_error(response, 401, "UNAUTHENTICATED")


def test_unknown_revoked_and_expired_keys_get_one_answer(system: System):
    record, key = system.create_key("short-lived", ["students:read"], expires_in_days=1)
    assert call(system, key, "GET", "/students").status_code == 200
    engine = create_engine(system.db_uris["gateway:GatewayBase"])
    with engine.begin() as connection:  # a day later, as the gateway sees it
        connection.execute(
            update(ApiKey).where(ApiKey.id == record["id"]).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    expired = poll(lambda: call(system, key, "GET", "/students"), lambda r: r.status_code == 401, timeout=10)

    _, revoked = system.create_key("revoked", ["students:read"])
    call(system, system.admin_key, "DELETE", f"/keys/{revoked.split('_')[1]}")
    _, other = system.create_key("other", ["students:read"])
    forged = keys.assemble(other.split("_")[1], "x" * keys.SECRET_LENGTH)  # a known id, a made-up secret

    unknown = keys.new_key()[2]  # well formed, never issued
    answers = [expired, *(call(system, key, "GET", "/students") for key in (revoked, forged, unknown))]
    for response in answers:
        assert_error(response, 401, "INVALID_API_KEY")
    assert [response.json() for response in answers] == [expired.json()] * 4  # nothing tells them apart


def test_a_revoked_key_stops_working_on_every_gateway_within_5_seconds(system: System, tmp_path):
    port = free_port()
    env = {**system.env, "GATEWAY_ADDRESS": f"127.0.0.1:{port}", "METRICS_PORT_GATEWAY": "0"}
    second = {"gateway-2": start_process("gateway.service", env, tmp_path / "gateway-2.log")}
    other_url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: _status(other_url, "/health"), lambda status: status == 200, timeout=30)
        gateways = [system.base_url, other_url]
        for revoke in (_revoke_over_http, _revoke_with_the_cli):
            record, key = system.create_key(f"revoked by {revoke.__name__}", ["students:read"])
            assert [_status(url, "/students", key) for url in gateways] == [200, 200]
            revoke(system, record["id"])
            revoked_at = time.monotonic()
            for url in gateways:
                poll(lambda url=url, key=key: _status(url, "/students", key), lambda status: status == 401, timeout=10)
                elapsed = time.monotonic() - revoked_at
                assert elapsed < REVOCATION_DEADLINE, f"{url} still took the key {elapsed:.1f}s after it was revoked"
    finally:
        stop_processes(second)


def _status(base_url: str, path: str, key: str | None = None) -> int:
    try:
        return requests.get(base_url + path, headers=bearer(key) if key else {}, timeout=5).status_code
    except requests.RequestException:
        return 0


def _revoke_over_http(system: System, key_id: str) -> None:
    assert system.delete(f"/keys/{key_id}").status_code == 200


def _revoke_with_the_cli(system: System, key_id: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.keys", "revoke", key_id],
        cwd=ROOT,
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"revoked key {key_id}")


def test_rate_limit_refuses_with_429_then_recovers(system: System, unique: str):
    student = system.create_student(unique)
    # one token every 5 s, three at once: the fourth quick request is refused
    _, key = system.create_key("slow client", ["students:read", "jobs:write"], rate_per_second=0.2, burst=3)
    upload = call(
        system,
        key,
        "POST",
        "/status-requests/bulk",
        data="student_id,status\n" + f"{student['id']},active\n" * 50,
        headers={"Content-Type": "text/csv"},
    )
    assert upload.status_code == 202, upload.text
    assert upload.headers["RateLimit-Limit"] == "3"
    assert upload.headers["RateLimit-Remaining"] == "2"  # fifty rows, one request, one token
    remaining = [call(system, key, "GET", "/students").headers["RateLimit-Remaining"] for _ in range(2)]
    assert remaining == ["1", "0"]

    refused = call(system, key, "GET", "/students")
    assert_error(refused, 429, "RATE_LIMITED")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 5
    assert refused.headers["RateLimit-Remaining"] == "0" and int(refused.headers["RateLimit-Reset"]) >= retry_after

    time.sleep(retry_after)
    recovered = call(system, key, "GET", "/students")
    assert recovered.status_code == 200, recovered.text


def test_the_audit_trail_records_a_scripted_session(system: System, unique: str):
    record, key = system.create_key(f"registrar app {unique}", ["students:write", "status:write", "students:read"])
    ids = [f"script-{unique}-{n}" for n in range(5)]
    created = call(
        system,
        key,
        "POST",
        "/students",
        json={"name": "Ana", "email": f"ana-{unique}@example.org", "course": "c"},
        headers={"X-Request-Id": ids[0], "X-Actor": "maria"},
    )
    sid = created.json()["id"]
    call(system, key, "GET", f"/students/{sid}", headers={"X-Request-Id": "a read is not audited"})
    call(system, key, "PATCH", f"/students/{sid}", json={"course": "d"}, headers={"X-Request-Id": ids[1]})
    change = call(
        system,
        key,
        "POST",
        f"/students/{sid}/status",
        json={"status": "bogus"},
        headers={"X-Request-Id": ids[2], "X-Actor": "maria"},
    )
    assert change.status_code == 422
    accepted = call(
        system, key, "POST", f"/students/{sid}/status", json={"status": "active"}, headers={"X-Request-Id": ids[3]}
    )
    call(system, key, "GET", "/audit", headers={"X-Request-Id": ids[4]})  # 403: no ops:read

    page = system.get("/audit", params={"key_id": record["id"], "limit": 50}).json()
    entries = [
        (e["method"], e["route"], e["status"], e["targets"], e["on_behalf_of"], e["correlation_id"])
        for e in reversed(page["items"])
    ]
    assert entries == [
        ("POST", "/students", 201, {"id": sid}, "maria", ids[0]),
        ("PATCH", "/students/{student_id}", 200, {"student_id": sid, "id": sid}, None, ids[1]),
        ("POST", "/students/{student_id}/status", 422, {"student_id": sid}, "maria", ids[2]),
        (
            "POST",
            "/students/{student_id}/status",
            202,
            {"student_id": sid, "request_id": accepted.json()["request_id"]},
            None,
            ids[3],
        ),
        ("GET", "/audit", 403, {}, None, ids[4]),
    ]
    assert {(e["key_id"], e["key_name"]) for e in page["items"]} == {(record["id"], record["name"])}
    assert key not in str(page) and f"ana-{unique}" not in str(page)  # never a key, never a body

    since = page["items"][1]["at"]  # the two newest
    assert [
        e["correlation_id"]
        for e in system.get("/audit", params={"key_id": record["id"], "since": since}).json()["items"]
    ] == [ids[4], ids[3]]
    first = system.get("/audit", params={"key_id": record["id"], "limit": 2}).json()
    second = system.get("/audit", params={"key_id": record["id"], "limit": 2, "cursor": first["next_cursor"]}).json()
    assert [e["correlation_id"] for e in first["items"] + second["items"]] == [ids[4], ids[3], ids[2], ids[1]]

    assert_error(system.get("/audit", params={"since": "yesterday"}), 422, "VALIDATION_ERROR")


def test_refusals_are_audited(system: System, unique: str):
    marker = f"refused-{unique}"
    call(system, None, "DELETE", "/students/1", headers={"X-Request-Id": marker})
    entries = system.get("/audit", params={"limit": 50}).json()["items"]
    [entry] = [e for e in entries if e["correlation_id"] == marker]
    assert (entry["status"], entry["key_id"], entry["method"], entry["route"]) == (
        401,
        None,
        "DELETE",
        "/students/{student_id}",
    )


def test_no_file_or_table_holds_a_key(system: System, scoped_keys):
    """Every key made so far on this system, searched for byte for byte in the data it keeps."""
    made = [system.admin_key, *scoped_keys.values()]
    created = call(system, system.admin_key, "POST", "/keys", json={"name": "over http", "scopes": ["ops:read"]})
    made.append(created.json()["api_key"])
    call(system, made[-1], "GET", "/audit")  # used, so its last-used time was written too
    needles = [needle for key in made for needle in (key.encode(), key.split("_")[2].encode())]
    if system.backend == "sqlite":
        directory = Path(system.db_uris["gateway:GatewayBase"].removeprefix("sqlite:///")).parent
        haystacks = {str(path): path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    else:
        haystacks = {}
        for uri in system.db_uris.values():
            engine = create_engine(uri)
            with engine.connect() as connection:
                for table in inspect(connection).get_table_names():
                    rows = connection.execute(text(f'SELECT * FROM "{table}"')).all()
                    haystacks[f"{uri.rsplit('/', 1)[1]}.{table}"] = repr(rows).encode()
            engine.dispose()
    assert haystacks
    leaks = [name for name, data in haystacks.items() for needle in needles if needle in data]
    assert leaks == []
