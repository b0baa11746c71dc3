"""Certificates: issued once per student and course on completion, verifiable,
rendered as a real PDF, revocable."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime
from pathlib import Path

import jsonschema_rs
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter
from nameko.testing.utils import get_container
from pypdf import PdfReader
from sqlalchemy import create_engine, update

from services import credentials, i18n
from services._certificates.models import StatusList
from services.certificates import CertificatesService
from services.credentials import generate_signing_key
from services.exceptions import CertificateNotFound, StatusListNotFound, ValidationFailed
from services.schemas import status_changes
from tests.integration.conftest import settled, wait_for
from tools.migrate import HISTORIES

OB3_SCHEMA = Path(__file__).parents[1] / "vendor/openbadges-3.0-c73e966/achievementcredential.schema.json"


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
    # what a mail carries, in one call: the same PDF and credential
    files = rpc.certificates.get_certificate_files(certificate["code"])
    assert files["credential"] == rpc.certificates.get_certificate_credential(certificate["code"])
    mailed = PdfReader(io.BytesIO(base64.b64decode(files["pdf"].pop("data"))))
    assert files["pdf"] == {key: value for key, value in document.items() if key != "data"}
    assert mailed.pages[0].extract_text() == text
    assert mailed.attachments == PdfReader(io.BytesIO(pdf)).attachments != {}

    # redelivered completion events: still one certificate, once all three were handled
    history = rpc.status.get_status_history(student["id"])["items"]
    event = {**history[-1], "course": "Biologia Marinha"}
    handled = []

    def redelivery_handled(worker_ctx, result, exc_info) -> bool:  # one worker may take several messages
        if exc_info is None:
            handled.extend(delivery for delivery in worker_ctx.args[0] if delivery.payload == event)
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
        changes = [c for delivery in worker_ctx.args[0] for c in status_changes(delivery.payload)]
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


def _status(rpc):
    """The status list callback of ``credentials.verify``, served by the certificates service."""

    def fetch(url: str) -> str:
        return rpc.certificates.get_status_list(int(url.rsplit("/", 1)[1]))["jwt"]

    return fetch


def test_each_certificate_carries_a_signed_credential_that_revocation_flips(services, rpc, unique):
    students = [
        rpc.students.create_student({"name": name, "email": f"{name}.{unique}@school.example", "course": "Química"})
        for name in ("bia", "caio", "davi")
    ]
    for student in students:
        complete(rpc, student["id"])
    codes = [wait_for(lambda s=s: rpc.certificates.list_certificates(s["id"]))[0]["code"] for s in students]
    issued = [rpc.certificates.get_certificate_credential(code) for code in codes]
    jwks = rpc.certificates.get_jwks()

    schema = jsonschema_rs.validator_for(json.loads(OB3_SCHEMA.read_text()))
    for code, credential in zip(codes, issued, strict=True):
        assert credential["filename"] == f"certificate-{code}.jwt"
        verdict = credentials.verify(credential["jwt"], jwks, _status(rpc))
        assert verdict.state == "valid", verdict.reasons
        assert list(schema.iter_errors(verdict.credential)) == []
        assert credential["credential"] == verdict.credential
        assert verdict.credential["id"] == rpc.certificates.get_certificate(code)["credential_url"]
        # the PDF carries the very same credential
        pdf = PdfReader(io.BytesIO(base64.b64decode(rpc.certificates.get_certificate_pdf(code)["data"])))
        assert pdf.attachments[credential["filename"]] == [credential["jwt"].encode()]
    bits = {
        (
            c["credential"]["credentialStatus"]["statusListCredential"],
            c["credential"]["credentialStatus"]["statusListIndex"],
        )
        for c in issued
    }
    assert len(bits) == 3, "every credential has a bit of its own"

    listing = rpc.certificates.get_status_list(1)["jwt"]
    rpc.certificates.revoke_certificate(codes[1], "issued in error")
    republished = rpc.certificates.get_status_list(1)["jwt"]
    assert republished != listing
    verdicts = [credentials.verify(c["jwt"], jwks, _status(rpc)).state for c in issued]
    assert verdicts == ["valid", "revoked", "valid"]
    rpc.certificates.revoke_certificate(codes[1], "again")
    assert rpc.certificates.get_status_list(1)["jwt"] == republished, "revoking twice changes nothing"
    for unknown in (2, 0, -1, "1", None, 2**40):
        with pytest.raises((StatusListNotFound, ValidationFailed)):
            rpc.certificates.get_status_list(unknown)


def test_status_list_bits_are_never_handed_out_twice_and_a_full_list_opens_the_next(config, services, rpc, unique):
    first = rpc.students.create_student({"name": "Eva", "email": f"eva.{unique}@school.example", "course": "Arte"})
    complete(rpc, first["id"])
    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(first["id"]))
    status = rpc.certificates.get_certificate_credential(certificate["code"])["credential"]["credentialStatus"]
    assert (status["statusListCredential"].rsplit("/", 1)[1], status["statusListIndex"]) == ("1", "0")

    engine = create_engine(config["DB_URIS"][HISTORIES["certificates"]])
    with engine.begin() as connection:  # list 1 as if 131,071 credentials had been issued
        connection.execute(update(StatusList).where(StatusList.id == 1).values(next_index=StatusList.size - 1))
    engine.dispose()
    entries = []
    for name in ("fabio", "gil"):
        student = rpc.students.create_student(
            {"name": name, "email": f"{name}.{unique}@school.example", "course": "Arte"}
        )
        complete(rpc, student["id"])
        [issued] = wait_for(lambda s=student: rpc.certificates.list_certificates(s["id"]))
        credential = rpc.certificates.get_certificate_credential(issued["code"])["credential"]
        entry = credential["credentialStatus"]
        entries.append((entry["statusListCredential"].rsplit("/", 1)[1], entry["statusListIndex"]))
        assert credentials.verify(
            rpc.certificates.get_certificate_credential(issued["code"])["jwt"],
            rpc.certificates.get_jwks(),
            _status(rpc),
        ).ok
    assert entries == [("1", "131071"), ("2", "0")]


def test_a_new_key_signs_from_then_on_and_the_old_key_stays_published(
    config, services, container_factory, rpc, unique, tmp_path
):
    before = rpc.students.create_student({"name": "Hugo", "email": f"hugo.{unique}@school.example", "course": "Arte"})
    complete(rpc, before["id"])
    [old] = wait_for(lambda: rpc.certificates.list_certificates(before["id"]))
    old_jwt = rpc.certificates.get_certificate_credential(old["code"])["jwt"]
    [old_kid] = [key["kid"] for key in rpc.certificates.get_jwks()["keys"]]

    get_container(services, CertificatesService).stop()
    new_key = tmp_path / "rotated.pem"
    generate_signing_key(new_key, bits=2048)
    container_factory(CertificatesService, {**config, "CERTIFICATE_SIGNING_KEY": str(new_key)}).start()

    after = rpc.students.create_student({"name": "Iris", "email": f"iris.{unique}@school.example", "course": "Arte"})
    complete(rpc, after["id"])
    [new] = wait_for(lambda: rpc.certificates.list_certificates(after["id"]))
    new_jwt = rpc.certificates.get_certificate_credential(new["code"])["jwt"]
    jwks = rpc.certificates.get_jwks()
    new_kid = credentials.unverified(new_jwt)[0]["kid"]
    assert new_kid != old_kid and [key["kid"] for key in jwks["keys"]] == [new_kid, old_kid]
    assert credentials.unverified(old_jwt)[0]["kid"] == old_kid
    for token in (old_jwt, new_jwt):
        assert credentials.verify(token, jwks, _status(rpc)).state == "valid"
    # revoking the old one: the list is signed again (by the new key), and still says so
    rpc.certificates.revoke_certificate(old["code"], "rotated out")
    assert credentials.verify(old_jwt, jwks, _status(rpc)).state == "revoked"
    assert credentials.verify(new_jwt, jwks, _status(rpc)).state == "valid"
    assert credentials.verify(old_jwt, {"keys": [jwks["keys"][0]]}).state == "invalid"  # only the old key verifies it


def test_a_certificate_is_in_its_student_s_language_pdf_and_credential_alike(services, rpc, unique):
    student = rpc.students.create_student(
        {"name": "Luíza", "email": f"luiza.{unique}@school.example", "course": "Música", "language": "pt-BR"}
    )
    complete(rpc, student["id"])
    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))
    pdf = PdfReader(io.BytesIO(base64.b64decode(rpc.certificates.get_certificate_pdf(certificate["code"])["data"])))
    text = pdf.pages[0].extract_text()
    assert "Certificado de Conclusão" in text and "Luíza" in text and "Música" in text
    assert i18n.format_date(datetime.fromisoformat(certificate["issued_at"]), "pt_BR") in text
    credential = rpc.certificates.get_certificate_credential(certificate["code"])["credential"]
    assert credential["name"] == "Certificado de conclusão: Música"
    assert credential["credentialSubject"]["achievement"]["description"] == "Conclusão do curso Música."
