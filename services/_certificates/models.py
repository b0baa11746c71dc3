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
    __table_args__ = (UniqueConstraint("student_id", "course"),)

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


class CertificatesOutbox(OutboxMixin, CertificatesBase):
    pass
