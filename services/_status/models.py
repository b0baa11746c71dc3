"""The status service's tables: current statuses, requests, bulk jobs, the append-only history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.infra.models import OutboxMixin, UTCDateTime, utcnow


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
        Index("ix_status_requests_correlation_id", "correlation_id"),  # the console finds a request's path
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
    on_behalf_of: Mapped[str | None] = mapped_column(String(200))  # a detail next to the actor
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
    # the request's correlation id (its X-Request-Id, its caller's, its job's); None before 0005
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    # the span that recorded it (traces on): applying it is that span's child
    traceparent: Mapped[str | None] = mapped_column(String(55))
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
    on_behalf_of: Mapped[str | None] = mapped_column(String(200))  # a detail next to the actor
    correlation_id: Mapped[str | None] = mapped_column(String(128))  # the upload's; every row carries it
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
    on_behalf_of: Mapped[str | None] = mapped_column(String(200))  # a detail next to the actor
    # unique: a request can never produce a second history row
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusOutbox(OutboxMixin, StatusBase):
    pass
