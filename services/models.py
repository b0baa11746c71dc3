"""SQLAlchemy models. Each service owns its own declarative base and database;
no service reads another's tables.

- ``StudentsBase``: the students service (profiles + a read copy of the status).
- ``StatusBase``: the status service (current status, requests, history).
- ``CertificatesBase``: the certificates service.
- ``NotificationsBase``: the notifications service (the mail log).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC: identical on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class OutboxMixin:
    """Events written in the same transaction as the change that caused them."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


# --- students service -------------------------------------------------------


class StudentsBase(DeclarativeBase):
    pass


class Student(StudentsBase):
    __tablename__ = "students"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    course: Mapped[str] = mapped_column(String(200), index=True)
    # read copy of the status service's authority, fed by its events
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_version: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StudentsOutbox(OutboxMixin, StudentsBase):
    pass


# --- status service ---------------------------------------------------------


class StatusBase(DeclarativeBase):
    pass


class StudentStatus(StatusBase):
    """The current status of one student; ``version`` counts applied changes."""

    __tablename__ = "student_statuses"

    student_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusRequest(StatusBase):
    __tablename__ = "status_requests"
    __table_args__ = (
        UniqueConstraint("student_id", "idempotency_key"),
        UniqueConstraint("job_id", "row_no", name="uq_status_requests_job_row"),
        Index("ix_status_requests_job_state", "job_id", "state"),  # a job's progress, counted in the index
        # the applier's queue: pending requests in arrival order, without scanning
        # the applied ones that precede them in ``seq``
        Index(
            "ix_status_requests_pending_seq",
            "seq",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )

    # ``seq`` orders requests (per student, first come first applied)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    # looked up through the (student_id, idempotency_key) index
    student_id: Mapped[int] = mapped_column(Integer)
    target_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # the course a completion is for (None: the student's own course)
    course: Mapped[str | None] = mapped_column(String(200))
    # pending ones through the partial index below; a job's through (job_id, state)
    state: Mapped[str] = mapped_column(String(10))
    from_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # a bulk job's row: which job, and its row number in the upload
    job_id: Mapped[str | None] = mapped_column(String(36))
    row_no: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusJob(StatusBase):
    """A bulk job: its rows are status requests (``job_id``), held until the
    upload is complete (``sealed_at``), then applied like any other request."""

    __tablename__ = "status_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # the upload attempt filling the job; a retried upload of an unsealed job replaces it
    upload: Mapped[str] = mapped_column(String(36))
    actor: Mapped[str | None] = mapped_column(String(200))
    total: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StatusJobError(StatusBase):
    """A job row refused before it became a request (invalid, unknown e-mail, duplicate)."""

    __tablename__ = "status_job_errors"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    row_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSON)


class StatusHistory(StatusBase):
    """Append-only: one row per applied change, never updated or deleted."""

    __tablename__ = "status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[int] = mapped_column(Integer, index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    # unique: a request can never produce a second history row
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusOutbox(OutboxMixin, StatusBase):
    pass


# --- certificates service ---------------------------------------------------


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
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(Text)


class CertificatesOutbox(OutboxMixin, CertificatesBase):
    pass


# --- notifications service --------------------------------------------------


class NotificationsBase(DeclarativeBase):
    pass


class Notification(NotificationsBase):
    """One e-mail: rendered when its event arrives, sent (and retried) by the sender."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # one mail per event and recipient, however often the event is delivered
    dedup_key: Mapped[str] = mapped_column(String(400), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    student_id: Mapped[int | None] = mapped_column(Integer, index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    attachment_name: Mapped[str | None] = mapped_column(String(200))
    attachment: Mapped[bytes | None] = mapped_column(LargeBinary)
    message_id: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(10), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
