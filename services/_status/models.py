"""The status service's tables: current statuses, requests, bulk jobs, the append-only history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, UniqueConstraint, event, text
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
        Index("ix_status_requests_correlation_id", "correlation_id"),  # the console finds a request's path
        # a job's refused rows, in row order (applied ones have no error_code: not in it)
        Index(
            "ix_status_requests_job_errors",
            "job_id",
            "row_no",
            sqlite_where=text("error_code IS NOT NULL"),
            postgresql_where=text("error_code IS NOT NULL"),
        ),
        # no index names ``state``: applying a request changes no indexed column, so PostgreSQL
        # updates the row in place on its page (a HOT update, fillfactor 50) instead of adding an
        # entry to every index; the pending ones are found through ``status_pending``
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
    # pending (also a row of status_pending), applied, rejected or failed; a rejected or failed
    # request has an error_code, an applied one none
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


class StatusPending(StatusBase):
    """The applier's queue: one row per pending request (its ``seq``), in arrival order. A request
    recorded pending is added by the statement that follows its insert (``repo.enqueue``); one
    whose state changes or that is deleted leaves by the database's triggers (:data:`PENDING_QUEUE`),
    whichever statement did it. ``student_id`` and ``job_id`` are the request's, so that the
    queue is read without the requests' table."""

    __tablename__ = "status_pending"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    student_id: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)  # a job's rows still pending


# A request leaves ``status_pending`` by triggers on ``status_requests``, so that every statement
# that settles (any UPDATE of its state) or deletes requests keeps the queue exact. PostgreSQL:
# statement-level triggers over transition tables (one statement per batch, not a call per row),
# deleting by ``= ANY(array)`` so that the plan is the primary key's whatever the queue's size.
PENDING_QUEUE = {
    "postgresql": [
        """CREATE OR REPLACE FUNCTION status_pending_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM status_pending WHERE seq = ANY(ARRAY(SELECT seq FROM settled WHERE state <> 'pending'));
    RETURN NULL;
END $$""",
        """CREATE OR REPLACE FUNCTION status_pending_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM status_pending WHERE seq = ANY(ARRAY(SELECT seq FROM dropped));
    RETURN NULL;
END $$""",
        "CREATE OR REPLACE TRIGGER status_pending_settled AFTER UPDATE ON status_requests"
        " REFERENCING NEW TABLE AS settled FOR EACH STATEMENT EXECUTE FUNCTION status_pending_settled()",
        "CREATE OR REPLACE TRIGGER status_pending_dropped AFTER DELETE ON status_requests"
        " REFERENCING OLD TABLE AS dropped FOR EACH STATEMENT EXECUTE FUNCTION status_pending_dropped()",
        # room on each page for its rows' next version: an applied request is updated in place (HOT)
        "ALTER TABLE status_requests SET (fillfactor = 50)",
    ],
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS status_pending_settled AFTER UPDATE OF state ON status_requests"
        " WHEN NEW.state <> 'pending' BEGIN DELETE FROM status_pending WHERE seq = NEW.seq; END",
        "CREATE TRIGGER IF NOT EXISTS status_pending_dropped AFTER DELETE ON status_requests BEGIN"
        " DELETE FROM status_pending WHERE seq = OLD.seq; END",
    ],
}


@event.listens_for(StatusBase.metadata, "after_create")
def _create_pending_queue(metadata, connection, **kw) -> None:
    """``create_all`` makes the triggers as migration 0009 does."""
    if not any(table.name == StatusRequest.__tablename__ for table in kw.get("tables", ())):
        return
    for statement in PENDING_QUEUE.get(connection.dialect.name, ()):
        connection.exec_driver_sql(statement)


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
