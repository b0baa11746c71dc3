"""The operations console over HTTP (pages read as text, without a browser): signing in with an
API key, the session cookie and its CSRF token, read-only keys, revocation, and the pages
finding a request by its correlation id and showing what followed it."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
import uuid
from datetime import UTC, datetime

import requests
from nameko.standalone.rpc import ClusterRpcProxy

from tests.e2e.support import HTTP_TIMEOUT, System, poll

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SERVICE_NAMES = ("students", "status", "certificates", "notifications")


def text(response: requests.Response) -> str:
    """The page's visible text, tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


def csrf_of(response: requests.Response) -> str:
    found = CSRF.search(response.text)
    assert found, response.text
    return html.unescape(found.group(1))


def browser() -> requests.Session:
    return requests.Session()  # no Authorization header: a person's browser


def sign_in(system: System, key: str, target: str = "/ops") -> requests.Session:
    session = browser()
    form = session.get(f"{system.base_url}/ops/login", params={"next": target}, timeout=HTTP_TIMEOUT)
    assert form.status_code == 200 and "Sign in" in text(form)
    answer = session.post(
        f"{system.base_url}/ops/login",
        data={"key": key, "csrf": csrf_of(form), "next": target},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert answer.status_code == 303, text(answer)
    assert answer.headers["Location"] == target
    return session


def get(session: requests.Session, system: System, path: str, **kwargs) -> requests.Response:
    response = session.get(system.base_url + path, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)
    assert response.status_code != 500 and "Traceback" not in response.text, response.text
    return response


def test_signing_in_gives_a_strict_http_only_cookie_and_the_pages(system: System, unique: str) -> None:
    anonymous = browser()
    refused = get(anonymous, system, "/ops/requests?state=pending")
    assert refused.status_code == 303
    assert refused.headers["Location"] == "/ops/login?next=/ops/requests%3Fstate%3Dpending"

    _, key = system.create_key(f"operator {unique}", ["ops:read"])
    form = get(anonymous, system, "/ops/login")
    signed = anonymous.post(
        f"{system.base_url}/ops/login",
        data={"key": key, "csrf": csrf_of(form), "next": "/ops/requests?state=pending"},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert signed.status_code == 303 and signed.headers["Location"] == "/ops/requests?state=pending"
    cookie = next(v for k, v in signed.raw.headers.items() if k.lower() == "set-cookie" and "mensageria_console=" in v)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes and "SameSite=Strict" in cookie and "Path=/ops" in cookie
    assert key not in cookie and key not in signed.text

    overview = get(anonymous, system, "/ops")
    assert overview.status_code == 200
    page = text(overview)
    assert f"Signed in as operator {unique} (read only)" in page
    # the broker's view (RABBIT_API_URI, whose statistics lag a few seconds): every service consumes
    every = r".*".join(rf"{service} up [1-9][0-9]* consumers, [0-9]+ queued" for service in SERVICE_NAMES)
    page = poll(lambda: text(get(anonymous, system, "/ops")), lambda found: re.search(every, found), timeout=20)
    assert "rpc-status" in page and "evt-gateway-status_change_requested--status.handle_status_change_requested" in page
    for service in SERVICE_NAMES:  # no launcher scales them here (SCALE_<SERVICE> 1..1, no launcher port)
        assert f"{service} not scaled here (fixed or scaled by the platform, e.g. KEDA) 1..1" in page
    assert overview.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert overview.headers["X-Frame-Options"] == "DENY" and overview.headers["Cache-Control"] == "no-store"


def test_a_bad_key_a_missing_scope_and_a_forged_form_are_refused_with_a_message(system: System, unique: str) -> None:
    person = browser()
    form = get(person, system, "/ops/login")
    token = csrf_of(form)

    def attempt(key: str, csrf: str = token) -> requests.Response:
        return person.post(
            f"{system.base_url}/ops/login", data={"key": key, "csrf": csrf}, allow_redirects=False, timeout=HTTP_TIMEOUT
        )

    wrong = attempt("msk_000000000000_" + "A" * 32 + "_AAAAAA")
    assert wrong.status_code == 401 and "not a valid API key" in text(wrong)
    assert attempt("").status_code == 401
    _, reader = system.create_key(f"no ops {unique}", ["students:read"])
    lacking = attempt(reader)
    assert lacking.status_code == 401 and "needs the scope ops:read" in text(lacking)
    _, operator = system.create_key(f"operator {unique}", ["ops:read"])
    forged = attempt(operator, csrf="forged")
    assert forged.status_code == 400 and "expired" in text(forged)
    elsewhere = browser().post(  # a form posted from another page: no sign-in cookie to match
        f"{system.base_url}/ops/login", data={"key": operator, "csrf": token}, allow_redirects=False, timeout=10
    )
    assert elsewhere.status_code == 400
    assert "mensageria_console" not in person.cookies and "mensageria_console" not in elsewhere.cookies


def test_a_forged_or_tampered_session_is_no_session(system: System, unique: str) -> None:
    _, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    value = session.cookies["mensageria_console"]
    for forged in (
        value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
        value.replace("v1.", "v2."),
        "v1.x.1.y.z",
    ):
        other = browser()
        other.cookies.set("mensageria_console", forged, path="/ops")
        assert get(other, system, "/ops").status_code == 303


def test_posting_without_the_session_s_csrf_token_is_refused(system: System, unique: str) -> None:
    _, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    page = get(session, system, "/ops")
    refused = session.post(f"{system.base_url}/ops/logout", data={}, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 403 and "Reload the page" in text(refused)
    signed_out = session.post(
        f"{system.base_url}/ops/logout", data={"csrf": csrf_of(page)}, allow_redirects=False, timeout=HTTP_TIMEOUT
    )
    assert signed_out.status_code == 303 and signed_out.headers["Location"] == "/ops/login"
    assert get(session, system, "/ops").status_code == 303  # the cookie is gone


def test_revoking_the_key_ends_its_sessions(system: System, unique: str) -> None:
    record, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    assert get(session, system, "/ops/audit").status_code == 200
    assert system.delete(f"/keys/{record['id']}").status_code == 200
    poll(lambda: get(session, system, "/ops/audit").status_code, lambda status: status == 303, timeout=5)


def test_a_request_is_found_by_its_correlation_id_with_what_followed(system: System, unique: str) -> None:
    student = system.create_student(unique)
    activate = system.post(
        f"/students/{student['id']}/status", json={"status": "active"}, headers={"X-Request-Id": f"ops-{unique}-a"}
    )
    assert system.settled_request(activate.json()["request_id"])["state"] == "applied"
    completion = system.post(f"/students/{student['id']}/completion", headers={"X-Request-Id": f"ops-{unique}-c"})
    request_id = completion.json()["request_id"]
    assert system.settled_request(request_id)["state"] == "applied"

    _, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    listed = get(session, system, "/ops/requests", params={"correlation_id": f"ops-{unique}-c"})
    assert listed.status_code == 200
    assert request_id in listed.text and activate.json()["request_id"] not in listed.text
    by_student = text(get(session, system, "/ops/requests", params={"student_id": student["id"], "state": "applied"}))
    assert request_id in by_student and activate.json()["request_id"] in by_student

    def detail() -> str:
        return text(get(session, system, f"/ops/requests/{request_id}"))

    # the change applied, its certificate, and its two mails (the change's, the certificate's) sent
    page = poll(detail, lambda found: found.count(": sent") == 2, timeout=30)
    assert "Applied: active → completed" in page and "Certificate" in page
    assert f"ops-{unique}-c" in page


def test_bad_filters_get_a_message_not_a_500(system: System, unique: str) -> None:
    _, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    for query, field in (
        ({"student_id": "abc"}, "student_id"),
        ({"since": "yesterday"}, "since"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"correlation_id": "two words"}, "correlation_id"),
        ({"state": "lost"}, "state"),
        ({"cursor": "!!"}, "cursor"),
    ):
        answer = get(session, system, "/ops/requests", params=query)
        assert answer.status_code == 422, (query, answer.status_code)
        assert field in text(answer)
    assert get(session, system, "/ops/audit", params={"key_id": "x"}).status_code == 422
    huge = browser().post(f"{system.base_url}/ops/login", data={"key": "x" * 100_000}, timeout=HTTP_TIMEOUT)
    assert huge.status_code == 413 and "Traceback" not in huge.text
    missing = get(session, system, "/ops/requests/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and "No status request" in text(missing)


def test_the_audit_trail_shows_sign_ins(system: System, unique: str) -> None:
    record, key = system.create_key(f"operator {unique}", ["ops:read"])
    session = sign_in(system, key)
    page = poll(
        lambda: text(get(session, system, "/ops/audit", params={"key_id": record["id"]})),
        lambda found: "/ops/login" in found,
        timeout=5,
    )
    assert f"operator {unique}" in page and "POST" in page


def park(system: System, payload: dict, error: str, correlation_id: str) -> str:
    """A status change parked in status.dead-letters as the retrying handler parks one (after a
    database outage outlasted its retries, say): replaying it must apply it."""
    from kombu import Connection, Exchange, Producer

    message_id = str(uuid.uuid4())
    queue = "evt-gateway-status_change_requested--status.handle_status_change_requested"
    headers = {
        "x-mensageria-original-exchange": "gateway.events",
        "x-mensageria-original-routing-key": "status_change_requested",
        "x-mensageria-queue": queue,
        "x-mensageria-handler": "status.handle_status_change_requested",
        "x-mensageria-attempt": 5,
        "x-mensageria-error": error,
        "x-mensageria-failed-at": datetime.now(UTC).isoformat(),
        "nameko.correlation_id": correlation_id,
    }
    with Connection(system.env["AMQP_URI"]) as connection:
        Producer(connection.channel()).publish(
            payload,
            exchange=Exchange(""),
            routing_key="status.dead-letters",
            headers=headers,
            message_id=message_id,
            serializer="json",
            delivery_mode=2,
            declare=[],
        )
    return message_id


def test_a_dead_letter_is_found_replayed_once_and_refused_to_a_reader(system: System, unique: str) -> None:
    student = system.create_student(unique)
    request_id = str(uuid.uuid4())
    change = {"request_id": request_id, "student_id": student["id"], "status": "active", "actor": "ops test"}
    error = f"OperationalError: database is locked ({unique})"
    message_id = park(system, {"requests": [change]}, error, f"ops-{unique}")

    _, reader_key = system.create_key(f"reader {unique}", ["ops:read"])
    reader = sign_in(system, reader_key)
    listed = get(reader, system, "/ops/dead-letters/status", params={"error": unique})
    assert listed.status_code == 200
    page = text(listed)
    assert "1 message(s) match" in page and error in page and "status.handle_status_change_requested" in page
    assert 'action="/ops/dead-letters/status/replay"' not in listed.text  # no buttons for a reader
    refused = reader.post(
        f"{system.base_url}/ops/dead-letters/status/replay",
        data={"csrf": csrf_of(listed), "message_id": message_id},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert refused.status_code == 403 and "lacks the scope ops:write" in text(refused)

    _, operator_key = system.create_key(f"operator {unique}", ["ops:read", "ops:write"])
    operator = sign_in(system, operator_key)
    listed = get(operator, system, "/ops/dead-letters/status", params={"error": unique})
    assert 'action="/ops/dead-letters/status/replay"' in listed.text

    def replay() -> requests.Response:
        return operator.post(
            f"{system.base_url}/ops/dead-letters/status/replay",
            data={"csrf": csrf_of(listed), "message_id": message_id},
            timeout=HTTP_TIMEOUT,
        )

    replayed = replay()
    assert replayed.status_code == 200 and f"Replayed {message_id}" in text(replayed)
    assert system.settled_request(request_id)["state"] == "applied"
    again = replay()  # a second click, or a purged message: a clear answer, nothing applied twice
    assert again.status_code == 404 and "no longer parked" in text(again)
    history = system.get(f"/students/{student['id']}/history").json()["items"]
    assert [entry["request_id"] for entry in history] == [request_id]
    audit = text(get(operator, system, "/ops/audit"))
    assert "/ops/dead-letters/{service}/replay" in audit and "service=status" in audit


def test_replaying_by_filter_counts_first_and_purging_needs_the_name(system: System, unique: str) -> None:
    first, second = system.create_student(unique), system.create_student(f"{unique}b")
    ids = []
    for student in (first, second):
        ids.append(str(uuid.uuid4()))
        change = {"request_id": ids[-1], "student_id": student["id"], "status": "active"}
        park(system, {"requests": [change]}, f"BackendTimeout: slow ({unique})", f"ops-{unique}")
    _, key = system.create_key(f"operator {unique}", ["ops:read", "ops:write"])
    operator = sign_in(system, key)
    csrf = csrf_of(get(operator, system, "/ops"))

    def post(path: str, **form: str) -> requests.Response:
        return operator.post(f"{system.base_url}{path}", data={"csrf": csrf, **form}, timeout=HTTP_TIMEOUT)

    dry = post("/ops/dead-letters/status/replay-matching", error=unique, cap="1")
    assert dry.status_code == 200 and "2 message(s) match" in text(dry) and "Replay 1 message(s)" in text(dry)
    assert [system.get(f"/status-requests/{i}").status_code for i in ids] == [404, 404]  # nothing replayed yet
    done = post("/ops/dead-letters/status/replay-matching", error=unique, cap="1", confirm="yes")
    assert "Replayed 1 message(s)." in text(done)
    poll(lambda: [system.get(f"/status-requests/{i}").status_code for i in ids], lambda found: 200 in found)
    left = text(get(operator, system, "/ops/dead-letters/status", params={"error": unique}))
    assert "1 message(s) match" in left

    wrong = post("/ops/dead-letters/status/purge", confirm="students")
    assert wrong.status_code == 422 and "type status to confirm" in text(wrong)
    bad_cap = post("/ops/dead-letters/status/replay-matching", error=unique, cap="lots")
    assert bad_cap.status_code == 422 and "cap" in text(bad_cap)
    purged = post("/ops/dead-letters/status/purge", confirm="status")
    assert purged.status_code == 200 and "Purged" in text(purged)
    assert "0 message(s) match" in text(get(operator, system, "/ops/dead-letters/status", params={"error": unique}))


def completed_student(system: System, unique: str) -> tuple[dict, dict]:
    """A student who completed the course: ``(student, certificate)``, mails sent."""
    student = system.create_student(unique, name=f"Zélia {unique}")
    for path, body in (
        (f"/students/{student['id']}/status", {"status": "active"}),
        (f"/students/{student['id']}/completion", None),
    ):
        accepted = system.post(path, json=body)
        assert system.settled_request(accepted.json()["request_id"])["state"] == "applied"
    [certificate] = poll(lambda: system.get(f"/students/{student['id']}/certificates").json(), bool)
    return student, certificate


def test_a_student_is_found_by_name_e_mail_or_id_with_their_history(system: System, unique: str) -> None:
    student, certificate = completed_student(system, unique)
    _, key = system.create_key(f"reader {unique}", ["ops:read"])
    reader = sign_in(system, key)
    by_name = get(reader, system, "/ops/students", params={"q": f"zélia {unique}"[:12]})
    assert by_name.status_code == 200 and f"/ops/students/{student['id']}" in by_name.text
    for q in (student["email"].upper(), str(student["id"])):
        found = get(reader, system, "/ops/students", params={"q": q})
        assert found.status_code == 303 and found.headers["Location"] == f"/ops/students/{student['id']}"
    missing = get(reader, system, "/ops/students", params={"q": f"nobody-{unique}@example.org"})
    assert missing.status_code == 404 and "No student with the e-mail" in text(missing)
    page = poll(
        lambda: text(get(reader, system, f"/ops/students/{student['id']}")), lambda found: found.count("sent") >= 3
    )
    assert "enrolled → active" in page and "active → completed" in page and certificate["code"] in page
    assert get(reader, system, "/ops/students/2000000000").status_code == 404


def test_a_certificate_is_revoked_from_its_page_with_a_reason(system: System, unique: str) -> None:
    _, certificate = completed_student(system, unique)
    code = certificate["code"]
    _, reader_key = system.create_key(f"reader {unique}", ["ops:read"])
    looked_up = get(sign_in(system, reader_key), system, "/ops/certificates", params={"code": code})
    assert "valid" in text(looked_up) and "/revocation" not in looked_up.text  # a reader has no button
    _, key = system.create_key(f"operator {unique}", ["ops:read", "ops:write"])
    operator = sign_in(system, key)
    page = get(operator, system, "/ops/certificates", params={"code": code})
    assert f'action="/ops/certificates/{code}/revocation"' in page.text

    def revoke(reason: str) -> requests.Response:
        return operator.post(
            f"{system.base_url}/ops/certificates/{code}/revocation",
            data={"csrf": csrf_of(page), "reason": reason},
            timeout=HTTP_TIMEOUT,
        )

    blank = revoke("  ")
    assert blank.status_code == 422 and "Give a reason" in text(blank)
    revoked = revoke(f"issued by mistake {unique}")
    assert revoked.status_code == 200 and f"Certificate {code} is revoked" in text(revoked)
    public = system.get(f"/certificates/{code}").json()
    assert public["status"] == "revoked" and public["revoke_reason"] == f"issued by mistake {unique}"
    assert get(operator, system, "/ops/certificates", params={"code": "nope"}).status_code == 404


def test_a_mail_is_resent_from_the_mail_page(system: System, unique: str) -> None:
    student, _ = completed_student(system, unique)
    _, key = system.create_key(f"operator {unique}", ["ops:read", "ops:write"])
    operator = sign_in(system, key)
    sent = poll(
        lambda: get(operator, system, "/ops/mail", params={"state": "sent"}),
        lambda page: student["email"] in page.text,
        timeout=30,
    )
    assert get(operator, system, "/ops/mail").status_code == 200  # the failed ones (none here)
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        [first, *_] = rpc.notifications.list_notifications(student_id=student["id"], state="sent")["items"]
    resent = operator.post(
        f"{system.base_url}/ops/mail/{first['id']}/resend", data={"csrf": csrf_of(sent)}, timeout=HTTP_TIMEOUT
    )
    assert resent.status_code == 200 and f"Mail {first['id']} to {student['email']}" in text(resent)
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:  # sent again, later
        again = poll(
            lambda: rpc.notifications.get_notification(first["id"]),
            lambda mail: mail["state"] == "sent" and mail["sent_at"] > first["sent_at"],
            timeout=30,
        )
    assert again["attempts"] == 1
    assert get(operator, system, "/ops/mail", params={"state": "lost"}).status_code == 422
    gone = operator.post(f"{system.base_url}/ops/mail/2000000000/resend", data={"csrf": csrf_of(sent)}, timeout=10)
    assert gone.status_code == 404


def test_a_job_shows_its_progress_and_its_errors_as_csv(system: System, unique: str) -> None:
    ana = system.create_student(f"ana-{unique}")
    body = f"student_id,status,reason\n{ana['id']},active,start\n2000000000,active,\n{ana['id']},retired,\n"
    accepted = system.post("/status-requests/bulk", data=body, headers={"Content-Type": "text/csv"})
    job_id = accepted.json()["job_id"]
    poll(lambda: system.get(f"/jobs/{job_id}").json()["state"], lambda state: state == "done")
    _, key = system.create_key(f"reader {unique}", ["ops:read"])
    reader = sign_in(system, key)
    assert f"/ops/jobs/{job_id}" in get(reader, system, "/ops/jobs").text
    page = get(reader, system, f"/ops/jobs/{job_id}")
    assert '<progress id="progress" max="3" value="3">' in page.text and "STUDENT_NOT_FOUND" in text(page)
    exported = get(reader, system, f"/ops/jobs/{job_id}/errors.csv")
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert exported.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}-errors.csv"'
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:3] == ["row", "code", "message"]
    assert [(row[0], row[1]) for row in rows[1:]] == [("2", "STUDENT_NOT_FOUND"), ("3", "VALIDATION_ERROR")]
    assert get(reader, system, "/ops/jobs/00000000-0000-4000-8000-000000000000").status_code == 404


def events(session: requests.Session, system: System, path: str, wanted: set[str], timeout: float = 15.0) -> dict:
    """Read a Server-Sent Events stream until an event of each name in ``wanted`` came:
    ``{name: data}`` (the first of each), and the stream's other lines under ``"lines"``."""
    seen: dict = {"lines": []}
    deadline = time.monotonic() + timeout
    with session.get(system.base_url + path, stream=True, timeout=timeout) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name:
                seen.setdefault(name, json.loads(line[len("data: ") :]))
                name = None
            else:
                seen["lines"].append(line)
            if wanted <= set(seen) or time.monotonic() > deadline:
                break
    assert wanted <= set(seen), seen
    return seen


def test_one_live_stream_carries_the_hour_so_far_and_each_new_sample(system: System, unique: str) -> None:
    _, key = system.create_key(f"reader {unique}", ["ops:read"])
    reader = sign_in(system, key)
    page = get(reader, system, "/ops")
    assert 'new EventSource("/ops/live")' in page.text and page.text.count("<script") == 1
    nonce = re.search(r'<script nonce="([^"]+)"', page.text).group(1)
    assert f"script-src 'nonce-{nonce}'" in page.headers["Content-Security-Policy"]
    seen = events(reader, system, "/ops/live", {"history", "sample"})
    assert "retry: 5000" in seen["lines"] and isinstance(seen["history"], list)
    sample = seen["sample"]
    assert sample["up"] == {"students": True, "status": True, "certificates": True, "notifications": True}
    assert sample["applied_total"] >= 0 and sample["pending"] >= 0 and "applied_per_second" in sample
    assert get(browser(), system, "/ops/live").status_code == 303  # no session, no stream


def test_a_job_page_streams_the_job_s_progress(system: System, unique: str) -> None:
    ana = system.create_student(f"ana-{unique}")
    accepted = system.post(
        "/status-requests/bulk", data=f"student_id,status\n{ana['id']},active\n", headers={"Content-Type": "text/csv"}
    )
    job_id = accepted.json()["job_id"]
    _, key = system.create_key(f"reader {unique}", ["ops:read"])
    reader = sign_in(system, key)
    assert f'new EventSource("/ops/live?job={job_id}")' in get(reader, system, f"/ops/jobs/{job_id}").text
    job = poll(
        lambda: events(reader, system, f"/ops/live?job={job_id}", {"job"})["job"],
        lambda progress: progress["state"] == "done",
    )
    assert (job["total"], job["applied"], job["pending"]) == (1, 1, 0)
    assert get(reader, system, "/ops/live?job=nope").status_code == 422
