"""Course completion over HTTP: the original endpoint, certificates, verification."""

from __future__ import annotations

import io
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from nameko.standalone.rpc import ClusterRpcProxy
from pypdf import PdfReader

from tests.e2e.support import System, assert_error, poll


def test_original_endpoint_creates_completes_and_certifies(system: System, unique: str) -> None:
    body = {"name": "João Conceição", "email": f"Joao.{unique}@Example.org", "course": "Biologia Marinha"}
    response = system.post("/api/v1/certificate/", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "pending" and accepted["status"] == "completed"
    assert response.headers["Location"] == f"/status-requests/{accepted['request_id']}"
    student = accepted["student"]
    assert student["email"] == body["email"].lower()

    assert system.settled_request(accepted["request_id"])["state"] == "applied"
    assert [h["to_status"] for h in system.history(student["id"])] == ["active", "completed"]

    certificates = poll(
        lambda: system.get(f"/students/{student['id']}/certificates").json(), lambda found: len(found) == 1
    )
    code = certificates[0]["code"]
    public = system.get(f"/certificates/{code}")
    assert public.status_code == 200
    verified = public.json()
    assert (verified["status"], verified["student_name"], verified["course"]) == (
        "valid",
        "João Conceição",
        "Biologia Marinha",
    )
    assert verified["issued_at"] and "student_email" not in verified

    pdf = system.get(f"/certificates/{code}.pdf")
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "João Conceição" in text and "Biologia Marinha" in text and code in text

    # the mails (no SMTP host here: .eml files in MAIL_DIR): two status changes and the certificate
    def mails() -> list[EmailMessage]:
        found = []
        for path in Path(system.env["MAIL_DIR"]).glob("*.eml"):
            message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            if message["To"] and student["email"] in message["To"]:
                found.append(message)
        return found

    received = poll(mails, lambda found: len(found) == 3, timeout=30)
    [certificate_mail] = [m for m in received if m.get_content_type() == "multipart/mixed"]
    text = certificate_mail.get_body(preferencelist=("plain",)).get_content()
    assert f"/certificates/{code}" in text and "João Conceição" in text
    [attachment, credential] = list(certificate_mail.iter_attachments())
    assert attachment.get_content_type() == "application/pdf" and attachment.get_content().startswith(b"%PDF-")
    assert credential.get_content_type() == "application/vc+jwt"
    assert credential.get_payload(decode=True).decode() == system.get(f"/certificates/{code}/credential").text

    # the same call again: the same student, no second certificate
    again = system.post("/api/v1/certificate/", json=body)
    assert again.status_code == 202 and again.json()["student"]["id"] == student["id"]
    system.settled_request(again.json()["request_id"])
    assert len(system.get(f"/students/{student['id']}/certificates").json()) == 1

    # revoked (by an operator over RPC): shown as revoked, with reason and date
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        rpc.certificates.revoke_certificate(code, "issued in error")
    revoked = system.get(f"/certificates/{code}").json()
    assert revoked["status"] == "revoked" and revoked["revoke_reason"] == "issued in error" and revoked["revoked_at"]


def test_original_endpoint_twice_at_once_with_a_key_activates_and_completes_once(system: System, unique: str) -> None:
    """The activation travels in the completion's message, before it: both recorded in that order,
    each once however often the call is repeated with its key."""
    body = {"name": "Ana Lima", "email": f"ana.{unique}@example.org", "course": "Física"}
    key = {"Idempotency-Key": f"legacy-{unique}"}
    first = system.post("/api/v1/certificate/", json=body, headers=key)
    second = system.post("/api/v1/certificate/", json=body, headers=key)
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.json()["request_id"] == second.json()["request_id"]
    student = first.json()["student"]
    assert second.json()["student"]["id"] == student["id"]
    assert system.settled_request(first.json()["request_id"])["state"] == "applied"
    history = system.history(student["id"])
    assert [(h["from_status"], h["to_status"]) for h in history] == [("enrolled", "active"), ("active", "completed")]
    assert [h["reason"] for h in history] == ["course started", "course completed"]


def test_completion_endpoint_follows_the_lifecycle(system: System, unique: str) -> None:
    student = system.create_student(unique)
    early = system.post(f"/students/{student['id']}/completion")
    assert early.status_code == 202
    rejected = system.settled_request(early.json()["request_id"])
    assert rejected["state"] == "rejected" and rejected["error"]["code"] == "INVALID_TRANSITION"

    system.settled_request(system.request_status(student["id"], "active")["request_id"])
    key = {"Idempotency-Key": f"complete-{unique}"}
    first = system.post(f"/students/{student['id']}/completion", json={"course": "Advanced"}, headers=key)
    second = system.post(f"/students/{student['id']}/completion", json={"course": "Advanced"}, headers=key)
    assert first.json()["request_id"] == second.json()["request_id"]
    assert system.settled_request(first.json()["request_id"])["state"] == "applied"
    [certificate] = poll(lambda: system.get(f"/students/{student['id']}/certificates").json(), bool)
    assert certificate["course"] == "Advanced"


def test_certificate_errors(system: System, unique: str) -> None:
    assert_error(system.get("/certificates/" + "A" * 32), 404, "CERTIFICATE_NOT_FOUND")
    assert_error(system.get("/certificates/" + "A" * 32 + ".pdf"), 404, "CERTIFICATE_NOT_FOUND")
    assert_error(system.get("/certificates/not.a.code"), 404, "NOT_FOUND")
    assert_error(system.get("/students/999999/certificates"), 404, "STUDENT_NOT_FOUND")
    assert_error(system.post("/students/999999/completion"), 404, "STUDENT_NOT_FOUND")
    details = assert_error(
        system.post("/api/v1/certificate/", json={"name": "", "email": "nope"}), 422, "VALIDATION_ERROR"
    )
    assert set(details) == {"name", "email", "course"}
    assert_error(
        system.post("/api/v1/certificate/", data="{", headers={"Content-Type": "application/json"}),
        400,
        "MALFORMED_JSON",
    )
    assert_error(
        system.post("/api/v1/certificate/", data="name=x", headers={"Content-Type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    assert_error(
        system.post(f"/students/{system.create_student(unique)['id']}/completion", json={"course": ""}),
        422,
        "VALIDATION_ERROR",
    )
