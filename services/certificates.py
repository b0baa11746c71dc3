"""certificates: issues one verifiable certificate per student and course.

Handles: status.student_status_changed (to ``completed``).
RPC: get_certificate, list_certificates, get_certificate_pdf, get_certificate_credential,
get_certificate_files, get_jwks, get_status_list, revoke_certificate, ping, and the dead-letter methods.
Events: certificate_issued, certificate_revoked (via the outbox).

Each certificate carries a signed Open Badges 3.0 credential (services/credentials.py) with a bit
in a revocation status list; revoking sets the bit and signs the list again.
"""

from __future__ import annotations

import base64
import json

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from services import credentials, i18n, lifecycle
from services._certificates import repo
from services._certificates.models import Certificate, CertificatesBase, CertificatesOutbox
from services._certificates.pdf import render_certificate
from services._certificates.signer import CredentialSigner
from services.exceptions import ValidationFailed
from services.infra import correlation, dead_letters, tracing
from services.infra.batching import EVENTS_A_BATCH, Delivery, batched_event_handler
from services.infra.correlation import Correlation
from services.infra.db import Database
from services.infra.heap import LeanHeap
from services.infra.inbound import rpc
from services.infra.logs import LogContext
from services.infra.metrics import CERTIFICATES_ISSUED, CERTIFICATES_REVOKED, Metrics
from services.infra.outbox import Outbox
from services.infra.rpc import TimedRpcProxy
from services.infra.settings import SettingsProvider, one_line_config_errors
from services.infra.tracing import Tracing
from services.schemas import CertificateSchema, StudentCertificateSchema, positive_id, status_changes

COMPLETIONS_A_ROUND = 1_000  # certified in one transaction (a signature each: ≈ 1-3 ms)

one_line_config_errors()  # `nameko run` without a usable signing key: one line naming it


class CertificatesService(dead_letters.DeadLetterRpc):  # the mixin named via its module: see students.py
    name = "certificates"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    heap = LeanHeap()  # less for the garbage collector: start-up heap frozen, no cycle per worker
    db = Database(CertificatesBase, session_options={"expire_on_commit": False})
    outbox = Outbox(CertificatesOutbox)
    students = TimedRpcProxy("students")
    settings = SettingsProvider()
    signer = CredentialSigner()  # CERTIFICATE_SIGNING_KEY: the service refuses to start without it

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @batched_event_handler("status", "student_status_changed", batch_size=EVENTS_A_BATCH)
    def handle_student_status_changed(self, deliveries: list[Delivery]) -> None:
        """The completions of every message waiting, up to ``EVENTS_A_BATCH`` of them, certified
        ``COMPLETIONS_A_ROUND`` at a time, each round in one transaction after one lookup of its
        students. A redelivered message (or a batch handled again one by one) re-issues nothing:
        one certificate per student and course."""
        changes = [c for d in deliveries for c in d.stamped(status_changes(d.payload))]  # invalid: parked
        completed = [c for c in changes if c["to_status"] == lifecycle.COMPLETED]
        for start in range(0, len(completed), COMPLETIONS_A_ROUND):
            self._certify_all(completed[start : start + COMPLETIONS_A_ROUND])

    def _certify_all(self, completed: list[dict]) -> None:
        # students deleted since have nobody to certify
        students = {s["id"]: s for s in self.students.get_students(sorted({c["student_id"] for c in completed}))}
        issued = 0
        with self.db.begin() as session:
            for change in completed:
                student = students.get(change["student_id"])
                if student is None:
                    continue
                with (
                    correlation.working_on(change["correlation_id"] or correlation.current()),  # the change's
                    tracing.item(change, "handle status.student_status_changed"),  # its trace's, likewise
                ):
                    issued += self._certify(session, change, student)
        CERTIFICATES_ISSUED.inc(issued)

    def _certify(self, session: Session, change: dict, student: dict) -> bool:
        """The student's certificate for the change's course, issued unless it exists; True if new."""
        certificate, created = repo.issue(
            session,
            student,
            change.get("course") or student["course"],
            change.get("request_id"),
            correlation.current(),
            language=i18n.normalize(student.get("language")),
        )
        if created:
            self._sign(session, certificate)
            self.outbox.add(session, "certificate_issued", self._event(certificate, private=True))
        return created

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
        """The certificate as a PDF (base64), with its signed credential attached inside."""
        return self._pdf(self._credentialed(code))

    @rpc
    def get_certificate_credential(self, code: str) -> dict:
        """The certificate's signed OpenBadgeCredential: ``jwt`` (compact JWS), ``credential``
        (its payload, decoded) and a ``filename`` for it."""
        return self._credential(self._credentialed(code))

    @rpc
    def get_certificate_files(self, code: str) -> dict:
        """What a mail about the certificate carries, from one read: ``pdf`` (as
        ``get_certificate_pdf`` answers) and ``credential`` (as ``get_certificate_credential``)."""
        certificate = self._credentialed(code)
        return {"pdf": self._pdf(certificate), "credential": self._credential(certificate)}

    @rpc
    def get_status_list(self, list_id: int) -> dict:
        """A revocation status list as last signed: ``jwt`` and ``credential`` (decoded)."""
        with self.db() as session:
            listing = repo.status_list(session, list_id)
            return {
                "jwt": listing.credential,
                "credential": credentials.unverified(listing.credential)[1],
                "media_type": credentials.MEDIA_TYPE,
            }

    @rpc
    def get_jwks(self) -> dict:
        """Every public key that has signed (or now signs) credentials, as a JWK Set."""
        with self.db() as session:
            published = repo.published_keys(session)
        key = self.signer.key
        keys = [
            credentials.public_jwk(
                json.loads(p.public_jwk), credentials.key_id(self.signer.jwks_url, p.thumbprint), p.alg
            )
            for p in published
            if p.thumbprint != key.thumbprint
        ]
        return {"keys": [key.public_jwk, *keys]}  # the signing key first

    @rpc
    def revoke_certificate(self, code: str, reason: str) -> dict:
        if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 1000:
            raise ValidationFailed("A reason is required.", {"reason": ["Must be 1 to 1000 characters."]})
        with self.db.begin() as session:
            certificate, revoked = repo.revoke(session, code, reason.strip())
            if revoked:
                if certificate.status_list is not None:  # its bit set, the list signed again
                    repo.republish(session, certificate.status_list, self.signer.sign_status_list)
                self.outbox.add(session, "certificate_revoked", self._event(certificate))
        if revoked:
            CERTIFICATES_REVOKED.inc()
        return self._dump(certificate)

    def _sign(self, session: Session, certificate: Certificate) -> None:
        """Give ``certificate`` a status bit and its signed credential (in the caller's transaction)."""
        repo.publish_key(session, self.signer.key)
        certificate.status_list, certificate.status_index = repo.allocate_bit(
            session, lambda number: self.signer.sign_status_list(number, [])
        )
        certificate.credential = self.signer.sign_certificate(certificate)
        session.flush()
        if certificate.revoked_at is not None:  # an old certificate, revoked before it had a credential
            repo.republish(session, certificate.status_list, self.signer.sign_status_list)

    def _credentialed(self, code: str) -> Certificate:
        """The certificate, with its credential made now if it was issued before credentials."""
        with self.db() as session:
            certificate = repo.get(session, code)
        if certificate.credential is not None:
            return certificate
        try:
            with self.db.begin() as session:
                certificate = repo.get(session, code)
                if certificate.credential is None:
                    self._sign(session, certificate)
        except (IntegrityError, OperationalError):  # a concurrent caller made it first: read theirs
            with self.db() as session:
                certificate = repo.get(session, code)
            if certificate.credential is None:
                raise
        return certificate

    def _pdf(self, certificate: Certificate) -> dict:
        document = render_certificate(
            name=certificate.student_name,
            course=certificate.course,
            issued_at=certificate.issued_at,
            code=certificate.code,
            verification_url=self._url(certificate),
            revoked=certificate.revoked_at is not None,
            language=self.signer.language(certificate),
            files=[(_credential_filename(certificate), certificate.credential.encode())],
        )
        return {
            "filename": f"certificate-{certificate.code}.pdf",
            "content_type": "application/pdf",
            "data": base64.b64encode(document).decode(),
        }

    def _credential(self, certificate: Certificate) -> dict:
        return {
            "jwt": certificate.credential,
            "credential": credentials.unverified(certificate.credential)[1],
            "filename": _credential_filename(certificate),
            "media_type": credentials.MEDIA_TYPE,
        }

    def _url(self, certificate: Certificate, suffix: str = "") -> str:
        base = self.settings.public_base_url.rstrip("/")
        return f"{base}/certificates/{certificate.code}{suffix}"

    def _dump(self, certificate: Certificate, schema: CertificateSchema | None = None) -> dict:
        return {
            **(schema or CertificateSchema()).dump(certificate),
            "verification_url": self._url(certificate),
            "pdf_url": self._url(certificate, ".pdf"),
            "credential_url": self._url(certificate, "/credential"),
        }

    def _event(self, certificate: Certificate, private: bool = False) -> dict:
        event = self._dump(certificate)
        if private:  # for the mail to the student; never in the public verification
            event.update(
                student_email=certificate.student_email,
                correlation_id=certificate.correlation_id,
                language=certificate.language,
            )
        return event


def _credential_filename(certificate: Certificate) -> str:
    return f"certificate-{certificate.code}.jwt"
