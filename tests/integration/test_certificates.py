"""Certificates: issued once per student and course on completion, verifiable,
rendered as a real PDF, revocable."""

from __future__ import annotations

import base64
import io

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter
from nameko.testing.utils import get_container
from pypdf import PdfReader

from services.certificates import CertificatesService
from services.exceptions import CertificateNotFound, ValidationFailed
from services.schemas import status_changes
from tests.integration.conftest import settled, wait_for


def complete(rpc, student_id: int, course: str | None = None) -> dict:
    for target in ("active", "completed"):
        request = rpc.status.request_status_change(student_id, target, course=course if target == "completed" else None)
        assert wait_for(lambda rid=request["request_id"]: settled(rpc, rid))["state"] == "applied"
    return request


def test_completion_issues_one_verifiable_certificate_with_a_real_pdf(config, services, rpc, unique):
    student = rpc.students.create_student(
        {"name": "João Conceição", "email": f"joao.{unique}@school.example", "course": "Biologia"}
    )
    request = complete(rpc, student["id"], course="Biologia Marinha")

    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))
    assert certificate["student_name"] == "João Conceição" and certificate["course"] == "Biologia Marinha"
    assert certificate["status"] == "valid" and certificate["revoked_at"] is None
    assert len(certificate["code"]) == 32 and certificate["verification_url"].endswith(certificate["code"])
    assert "email" not in str(certificate), "the public view carries no e-mail address"
    # the student's list names the completion's correlation id; the public view does not
    assert certificate["correlation_id"] == request["correlation_id"]
    public = rpc.certificates.get_certificate(certificate["code"])
    assert public == {key: value for key, value in certificate.items() if key != "correlation_id"}

    document = rpc.certificates.get_certificate_pdf(certificate["code"])
    assert document["content_type"] == "application/pdf"
    pdf = base64.b64decode(document["data"])
    assert pdf.startswith(b"%PDF-")
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in ("João Conceição", "Biologia Marinha", certificate["code"], certificate["verification_url"]):
        assert expected in text

    # redelivered completion events: still one certificate, once all three were handled
    history = rpc.status.get_status_history(student["id"])["items"]
    event = {**history[-1], "course": "Biologia Marinha"}
    handled = []

    def redelivery_handled(worker_ctx, result, exc_info) -> bool:
        if worker_ctx.args == (event,) and exc_info is None:
            handled.append(worker_ctx)
        return len(handled) == 3

    dispatch = event_dispatcher(config)
    certificates = get_container(services, CertificatesService)
    with entrypoint_waiter(certificates, "handle_student_status_changed", callback=redelivery_handled, timeout=30):
        for _ in range(3):
            dispatch("status", "student_status_changed", event)
    noop = rpc.status.request_status_change(student["id"], "completed")  # a no-op: no event, no certificate
    noop = wait_for(lambda rid=noop["request_id"]: settled(rpc, rid))
    assert (noop["state"], noop["from_status"]) == ("applied", "completed")
    assert rpc.certificates.list_dead_letters() == []
    assert [c["code"] for c in rpc.certificates.list_certificates(student["id"])] == [certificate["code"]]
    assert request["request_id"] == history[-1]["request_id"]


def test_other_transitions_issue_nothing_and_course_defaults_to_the_students(services, rpc, unique):
    student = rpc.students.create_student({"name": "Ana", "email": f"ana.{unique}@school.example", "course": "Física"})

    def activation_handled(worker_ctx, result, exc_info) -> bool:
        changes = status_changes(worker_ctx.args[0])
        return exc_info is None and any(
            c["student_id"] == student["id"] and c["to_status"] == "active" for c in changes
        )

    certificates = get_container(services, CertificatesService)
    with entrypoint_waiter(certificates, "handle_student_status_changed", callback=activation_handled, timeout=30):
        request = rpc.status.request_status_change(student["id"], "active")
    assert wait_for(lambda: settled(rpc, request["request_id"]))["state"] == "applied"
    assert rpc.certificates.list_certificates(student["id"]) == []  # the certificates service has seen it
    complete(rpc, student["id"])
    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))
    assert certificate["course"] == "Física"


def test_revoke_and_unknown_codes(rpc, unique):
    student = rpc.students.create_student({"name": "Rui", "email": f"rui.{unique}@school.example", "course": "Arte"})
    complete(rpc, student["id"])
    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))

    revoked = rpc.certificates.revoke_certificate(certificate["code"], "issued in error")
    assert revoked["status"] == "revoked" and revoked["revoke_reason"] == "issued in error" and revoked["revoked_at"]
    again = rpc.certificates.revoke_certificate(certificate["code"], "another reason")
    assert again == revoked, "revoking twice changes nothing"
    assert rpc.certificates.get_certificate(certificate["code"])["status"] == "revoked"
    pdf = base64.b64decode(rpc.certificates.get_certificate_pdf(certificate["code"])["data"])
    assert "REVOKED" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()

    with pytest.raises(ValidationFailed):
        rpc.certificates.revoke_certificate(certificate["code"], " ")
    for code in ("A" * 32, "not a code", "", "../etc/passwd"):
        with pytest.raises(CertificateNotFound):
            rpc.certificates.get_certificate(code)
