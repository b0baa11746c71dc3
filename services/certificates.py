"""certificates: issues one verifiable certificate per student and course.

Handles: status.student_status_changed (to ``completed``).
RPC: get_certificate, list_certificates, get_certificate_pdf, revoke_certificate, ping,
and the dead-letter methods.
Events: certificate_issued, certificate_revoked (via the outbox).
"""

from __future__ import annotations

import base64

from services import lifecycle
from services._certificates import repo
from services._certificates.models import Certificate, CertificatesBase, CertificatesOutbox
from services._certificates.pdf import render_certificate
from services.exceptions import StudentNotFound, ValidationFailed
from services.infra import correlation, dead_letters, tracing
from services.infra.correlation import Correlation
from services.infra.db import Database
from services.infra.inbound import rpc
from services.infra.logs import LogContext
from services.infra.metrics import CERTIFICATES_ISSUED, CERTIFICATES_REVOKED, Metrics
from services.infra.outbox import Outbox
from services.infra.retry import reliable_event_handler
from services.infra.rpc import TimedRpcProxy
from services.infra.settings import SettingsProvider
from services.infra.tracing import Tracing
from services.schemas import CertificateSchema, StudentCertificateSchema, positive_id, status_changes


class CertificatesService(dead_letters.DeadLetterRpc):  # the mixin named via its module: see students.py
    name = "certificates"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    db = Database(CertificatesBase, session_options={"expire_on_commit": False})
    outbox = Outbox(CertificatesOutbox)
    students = TimedRpcProxy("students")
    settings = SettingsProvider()

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @reliable_event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        for change in status_changes(payload):  # a redelivered batch re-issues nothing: one per student+course
            if change["to_status"] == lifecycle.COMPLETED:
                with (
                    correlation.working_on(change["correlation_id"] or correlation.current()),  # the change's
                    tracing.item(change, "handle status.student_status_changed"),  # its trace's, likewise
                ):
                    self._certify(change)

    def _certify(self, change: dict) -> None:
        try:
            student = self.students.get_student(change["student_id"])
        except StudentNotFound:
            return  # deleted since: nobody to certify
        with self.db.begin() as session:
            certificate, created = repo.issue(
                session,
                student,
                change.get("course") or student["course"],
                change.get("request_id"),
                correlation.current(),
            )
            if created:
                self.outbox.add(session, "certificate_issued", self._event(certificate, private=True))
        if created:
            CERTIFICATES_ISSUED.inc()

    @rpc
    def get_certificate(self, code: str) -> dict:
        with self.db() as session:
            return self._dump(repo.get(session, code))

    @rpc
    def list_certificates(self, student_id: int) -> list[dict]:
        with self.db() as session:
            certificates = repo.for_student(session, positive_id(student_id))
            return [self._dump(c, StudentCertificateSchema()) for c in certificates]

    @rpc
    def get_certificate_pdf(self, code: str) -> dict:
        with self.db() as session:
            certificate = repo.get(session, code)
        document = render_certificate(
            name=certificate.student_name,
            course=certificate.course,
            issued_at=certificate.issued_at,
            code=certificate.code,
            verification_url=self._url(certificate),
            revoked=certificate.revoked_at is not None,
            language=self._language(certificate),
        )
        return {
            "filename": f"certificate-{certificate.code}.pdf",
            "content_type": "application/pdf",
            "data": base64.b64encode(document).decode(),
        }

    @rpc
    def revoke_certificate(self, code: str, reason: str) -> dict:
        if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 1000:
            raise ValidationFailed("A reason is required.", {"reason": ["Must be 1 to 1000 characters."]})
        with self.db.begin() as session:
            certificate, revoked = repo.revoke(session, code, reason.strip())
            if revoked:
                self.outbox.add(session, "certificate_revoked", self._event(certificate))
        if revoked:
            CERTIFICATES_REVOKED.inc()
        return self._dump(certificate)

    def _language(self, certificate: Certificate) -> str:
        """The language a certificate is printed in: for now always DEFAULT_LANGUAGE (certificates
        do not record one of their own yet)."""
        return self.settings.default_language

    def _url(self, certificate: Certificate, suffix: str = "") -> str:
        base = self.settings.public_base_url.rstrip("/")
        return f"{base}/certificates/{certificate.code}{suffix}"

    def _dump(self, certificate: Certificate, schema: CertificateSchema | None = None) -> dict:
        return {
            **(schema or CertificateSchema()).dump(certificate),
            "verification_url": self._url(certificate),
            "pdf_url": self._url(certificate, ".pdf"),
        }

    def _event(self, certificate: Certificate, private: bool = False) -> dict:
        event = self._dump(certificate)
        if private:  # for the mail to the student; never in the public verification
            event.update(student_email=certificate.student_email, correlation_id=certificate.correlation_id)
        return event
