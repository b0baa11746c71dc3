"""Database operations of the certificates service (its own tables only)."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from services._certificates.models import Certificate
from services.exceptions import CertificateNotFound
from services.infra.models import utcnow

# 24 random bytes: 192 bits, URL-safe base64 without padding (32 characters)
CODE_BYTES = 24
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def get(session: Session, code: str) -> Certificate:
    certificate = None
    if isinstance(code, str) and CODE_PATTERN.match(code):
        certificate = session.scalar(select(Certificate).where(Certificate.code == code))
    if certificate is None:
        raise CertificateNotFound("No certificate has this code.", {"code": str(code)[:64]})
    return certificate


def issue(
    session: Session, student: dict, course: str, request_id: str | None, correlation_id: str | None = None
) -> tuple[Certificate, bool]:
    """The student's certificate for ``course``: the existing one, or a new one (recording the
    request and the correlation id that caused it)."""
    existing = session.scalar(
        select(Certificate).where(Certificate.student_id == student["id"], Certificate.course == course)
    )
    if existing is not None:
        return existing, False
    certificate = Certificate(
        code=new_code(),
        student_id=student["id"],
        course=course,
        student_name=student["name"],
        student_email=student["email"],
        request_id=request_id,
        correlation_id=correlation_id,
        issued_at=utcnow(),
    )
    session.add(certificate)
    session.flush()  # a concurrent twin fails here on (student_id, course): the handler retries
    return certificate, True


def for_student(session: Session, student_id: int) -> list[Certificate]:
    query = select(Certificate).where(Certificate.student_id == student_id).order_by(Certificate.id)
    return list(session.scalars(query))


def revoke(session: Session, code: str, reason: str) -> tuple[Certificate, bool]:
    certificate = get(session, code)
    if certificate.revoked_at is not None:
        return certificate, False
    certificate.revoked_at, certificate.revoke_reason = utcnow(), reason
    return certificate, True
