"""One correlation id from HTTP to the mail: the gateway takes a sane ``X-Request-Id`` (or makes
one), answers with it, and the status request, the certificate and the mails carry it."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from tests.e2e.support import System, assert_error, poll

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def mails_to(system: System, address: str) -> list[EmailMessage]:
    found = []
    for path in Path(system.env["MAIL_DIR"]).glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if message["To"] and address in message["To"]:
            found.append(message)
    return found


def mail_ids(system: System, address: str, count: int) -> list[str]:
    """The ``X-Correlation-ID`` of each mail to ``address``, once there are ``count``."""
    mails = poll(lambda: mails_to(system, address), lambda found: len(found) == count, timeout=30)
    return sorted(str(mail["X-Correlation-ID"]) for mail in mails)


def test_one_id_from_the_request_to_the_certificate_and_the_mail(system: System, unique: str) -> None:
    student = system.create_student(unique)
    activate, complete = f"corr-{unique}-activate", f"corr-{unique}-complete"

    accepted = system.post(
        f"/students/{student['id']}/status", json={"status": "active"}, headers={"X-Request-Id": activate}
    )
    assert accepted.status_code == 202 and accepted.headers["X-Request-Id"] == activate
    assert accepted.json()["correlation_id"] == activate
    request = system.settled_request(accepted.json()["request_id"])
    assert (request["state"], request["correlation_id"]) == ("applied", activate)

    completion = system.post(f"/students/{student['id']}/completion", headers={"X-Request-Id": complete})
    assert completion.status_code == 202 and completion.headers["X-Request-Id"] == complete
    assert system.settled_request(completion.json()["request_id"])["correlation_id"] == complete

    [certificate] = poll(lambda: system.get(f"/students/{student['id']}/certificates").json(), bool)
    assert certificate["correlation_id"] == complete
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        assert rpc.certificates.list_certificates(student["id"])[0]["correlation_id"] == complete
    assert "correlation_id" not in system.get(f"/certificates/{certificate['code']}").json()  # public: never

    # a mail per change (activation, completion) and one with the certificate
    assert mail_ids(system, student["email"], 3) == sorted([activate, complete, complete])


def test_the_original_endpoint_carries_one_id_through_both_of_its_changes(system: System, unique: str) -> None:
    body = {"name": "Bia", "email": f"bia.{unique}@example.org", "course": "Geologia"}
    legacy = f"corr-{unique}-legacy"

    response = system.post("/api/v1/certificate/", json=body, headers={"X-Request-Id": legacy})

    assert response.status_code == 202 and response.headers["X-Request-Id"] == legacy
    assert system.settled_request(response.json()["request_id"])["correlation_id"] == legacy
    # the activation (an RPC from the gateway), the completion and the certificate: one id
    assert mail_ids(system, body["email"], 3) == [legacy] * 3


def test_errors_echo_the_id_too(system: System, unique: str) -> None:
    sent = {"X-Request-Id": f"corr-{unique}-error"}

    missing = system.get("/students/2000000000", headers=sent)
    assert_error(missing, 404, "STUDENT_NOT_FOUND")
    invalid = system.post("/students", json={"name": ""}, headers=sent)
    assert_error(invalid, 422, "VALIDATION_ERROR")
    without_key = requests.get(f"{system.base_url}/students", headers=sent, timeout=10)
    assert_error(without_key, 401, "UNAUTHENTICATED")
    no_route = system.get("/no/such/route", headers=sent)
    assert_error(no_route, 404, "NOT_FOUND")
    wrong_method = system.request("PUT", "/students", headers=sent)
    assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED")
    for response in (missing, invalid, without_key, no_route, wrong_method):
        assert response.headers["X-Request-Id"] == sent["X-Request-Id"], response.request.url
    assert UUID.fullmatch(system.get("/no/such/route").headers["X-Request-Id"])  # none sent: a new one


@pytest.mark.parametrize("insane", ["x" * 129, "has a space", "tab\tinside", "ç-not-ascii"], ids=repr)
def test_an_insane_id_is_replaced_by_a_uuid(system: System, unique: str, insane: str) -> None:
    student = system.create_student(f"{unique}-{len(insane)}")

    response = system.post(
        f"/students/{student['id']}/status",
        json={"status": "active"},
        headers={"X-Request-Id": insane.encode("utf-8")},
    )

    assert response.status_code == 202
    issued = response.headers["X-Request-Id"]
    assert UUID.fullmatch(issued), issued
    assert system.settled_request(response.json()["request_id"])["correlation_id"] == issued


def test_a_bulk_job_s_requests_carry_the_job_s_id(system: System, unique: str) -> None:
    ana, bea = (system.create_student(f"{name}-{unique}") for name in ("ana", "bea"))
    job_id = f"corr-{unique}-job"
    csv = f"student_id,status\n{ana['id']},active\n{bea['id']},completed\n"  # row 2: enrolled -> completed

    accepted = system.post(
        "/status-requests/bulk", data=csv, headers={"Content-Type": "text/csv", "X-Request-Id": job_id}
    )

    assert accepted.status_code == 202 and accepted.headers["X-Request-Id"] == job_id
    assert accepted.json()["correlation_id"] == job_id
    job = poll(lambda: system.get(accepted.headers["Location"]).json(), lambda job: job["state"] == "done")
    assert job["correlation_id"] == job_id
    [rejected] = job["errors"]  # its request, by id
    [applied] = system.history(ana["id"])
    for request_id in (rejected["details"]["request_id"], applied["request_id"]):
        assert system.get(f"/status-requests/{request_id}").json()["correlation_id"] == job_id
    assert mail_ids(system, ana["email"], 1) == [job_id]
