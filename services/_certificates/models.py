"""The certificates service's table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.infra.models import OutboxMixin, UTCDateTime, utcnow


class CertificatesBase(DeclarativeBase):
    pass


class Certificate(CertificatesBase):
    """One per student and course; ``code`` is the public, unguessable key."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("student_id", "course"),
        UniqueConstraint("status_list", "status_index", name="uq_certificates_status_list_status_index"),  # a bit each
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    student_id: Mapped[int] = mapped_column(Integer, index=True)
    course: Mapped[str] = mapped_column(String(200))
    student_name: Mapped[str] = mapped_column(String(200))
    student_email: Mapped[str] = mapped_column(String(320))
    request_id: Mapped[str | None] = mapped_column(String(36))
    correlation_id: Mapped[str | None] = mapped_column(String(128))  # of the completion that issued it
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    # the language its texts are in (the student's at issue; None: DEFAULT_LANGUAGE)
    language: Mapped[str | None] = mapped_column(String(10))
    # the signed Open Badges 3.0 credential (compact JWS), and its bit in a revocation status list;
    # None for a certificate issued before credentials existed, until it is first asked for
    credential: Mapped[str | None] = mapped_column(Text)
    status_list: Mapped[int | None] = mapped_column(Integer)
    status_index: Mapped[int | None] = mapped_column(Integer)


class StatusList(CertificatesBase):
    """A revocation status list (W3C Bitstring Status List) and its latest signed publication.

    ``next_index`` only grows: a bit, once given to a credential, is never given to another."""

    __tablename__ = "status_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer)
    next_index: Mapped[int] = mapped_column(Integer, default=0)
    credential: Mapped[str] = mapped_column(Text)  # the signed BitstringStatusListCredential
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublishedKey(CertificatesBase):
    """A public key that has signed credentials: published at /.well-known/jwks.json for good, so
    credentials signed before a rotation still verify."""

    __tablename__ = "signing_keys"

    thumbprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # RFC 7638, base64url
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON, public members only
    first_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CertificatesOutbox(OutboxMixin, CertificatesBase):
    pass
