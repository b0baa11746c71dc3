"""Bulk jobs of the status service: many status requests submitted as one upload.

A job's rows are ordinary status requests (``job_id``, ``row_no``), recorded
pending while the upload goes on but left alone by the applier until the upload
is complete (``seal``; see ``batches.released``), so an upload that fails
half-way changes nothing. Rows refused before becoming requests (invalid, unknown e-mail) are
kept in ``status_job_errors``; a row that repeats the same student's previous
row in the job is refused at the seal as ``DUPLICATE_ROW``.

An idempotency key names one job: repeating a completed upload returns the job;
repeating an interrupted one (never sealed) starts its upload afresh.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services import lifecycle
from services._status.models import StatusJob, StatusJobError, StatusPending, StatusRequest
from services._status.repo import FAILED, PENDING, REJECTED, enqueue
from services.exceptions import JobNotFound, JobUploadSuperseded, ValidationFailed
from services.infra import correlation
from services.infra.db import insert_ignoring_duplicates, insert_many
from services.infra.ids import uuid7_texts
from services.infra.models import utcnow
from services.infra.pagination import MAX_ID

DUPLICATE_ROW = "DUPLICATE_ROW"
MAX_REASON = 1000
MAX_ERRORS_SHOWN = 1000
RECEIVING, RUNNING, DONE = "receiving", "running", "done"


@dataclass(frozen=True)
class Upload:
    job_id: str
    upload: str
    created: bool  # False: the key names a job already sealed; nothing to upload


def create(
    session_factory: sessionmaker,
    idempotency_key: str | None,
    actor: str | None,
    on_behalf_of: str | None = None,
    correlation_id: str | None = None,
) -> Upload:
    """A new job, or the one ``idempotency_key`` names (reset if never sealed); its
    ``actor``, ``on_behalf_of`` and ``correlation_id`` (default: the id in hand, the
    upload's) go onto every request of the job."""
    correlation_id = correlation_id or correlation.current()
    for _ in range(2):
        with session_factory.begin() as session:
            job = None
            if idempotency_key is not None:
                job = session.scalar(
                    select(StatusJob).where(StatusJob.idempotency_key == idempotency_key).with_for_update()
                )
            if job is not None and job.sealed_at is not None:
                return Upload(job.id, job.upload, False)
            if job is not None:  # an earlier upload never completed: start again
                _drop_rows(session, job.id)
                job.upload, job.created_at = str(uuid.uuid4()), utcnow()
                job.actor, job.on_behalf_of, job.correlation_id = actor, on_behalf_of, correlation_id
                return Upload(job.id, job.upload, True)
        try:
            with session_factory.begin() as session:
                job = StatusJob(
                    id=str(uuid.uuid4()),
                    idempotency_key=idempotency_key,
                    upload=str(uuid.uuid4()),
                    actor=actor,
                    on_behalf_of=on_behalf_of,
                    correlation_id=correlation_id,
                )
                session.add(job)
            return Upload(job.id, job.upload, True)
        except IntegrityError:  # a concurrent upload with the same key won: look again
            continue
    raise RuntimeError("job vanished after a unique-key conflict")


def _receiving(session: Session, job_id: str, upload: str) -> StatusJob:
    job = session.scalar(select(StatusJob).where(StatusJob.id == job_id).with_for_update())
    if job is None:
        raise JobNotFound(f"Job {job_id} not found.", {"job_id": job_id})
    if job.upload != upload or job.sealed_at is not None:
        raise JobUploadSuperseded("Another upload with the same idempotency key replaced this one.", {"job_id": job_id})
    return job


def add_rows(session: Session, job_id: str, upload: str, rows: list[list], errors: list[list]) -> int:
    """Record rows ``[row_no, student_id, status, reason]`` as pending requests (left alone until the seal) and
    refused rows ``[row_no, code, message, details]``; a row number already
    recorded is skipped (a repeated chunk adds nothing)."""
    _check_shapes(rows, errors)
    job = _receiving(session, job_id, upload)  # locked: no other chunk of this job is recorded meanwhile
    fresh = _unrecorded(session, job_id, rows)
    now = utcnow()
    requests = [
        {
            "id": request_id,  # time-ordered: a large job fills the index at its end
            "student_id": student_id,
            "target_status": status,
            "reason": reason,
            "actor": job.actor,
            "on_behalf_of": job.on_behalf_of,
            "correlation_id": job.correlation_id,
            "state": PENDING,
            "attempts": 0,
            "job_id": job_id,
            "row_no": row_no,
            "created_at": now,
            "updated_at": now,
        }
        for request_id, (row_no, student_id, status, reason) in zip(uuid7_texts(len(fresh)), fresh, strict=True)
    ]
    if fresh:
        # PostgreSQL: the job's row lock keeps its other chunks out until this one commits, so the
        # rows left go straight in by COPY (no staging table, no conflict checks); SQLite takes no
        # row lock, so its insert still skips a row another instance recorded meanwhile
        insert_many(session, StatusRequest.__table__, requests, ignore_duplicates=_dialect(session) == "sqlite")
        numbers = [row[0] for row in fresh]
        enqueue(session, StatusRequest.job_id == job_id, StatusRequest.row_no.between(min(numbers), max(numbers)))
    insert_ignoring_duplicates(
        session,
        StatusJobError.__table__,
        [
            {"job_id": job_id, "row_no": row_no, "code": code, "message": message, "details": details}
            for row_no, code, message, details in errors
        ],
    )
    return len(rows) + len(errors)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _unrecorded(session: Session, job_id: str, rows: list[list]) -> list[list]:
    """``rows`` whose row numbers the job has not recorded yet, the first of any repeated in them."""
    if not rows:
        return rows
    numbers = [row[0] for row in rows]
    seen = set(
        session.scalars(
            select(StatusRequest.row_no).where(
                StatusRequest.job_id == job_id, StatusRequest.row_no.between(min(numbers), max(numbers))
            )
        )
    )
    if not seen and len(set(numbers)) == len(numbers):
        return rows
    fresh = []
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            fresh.append(row)
    return fresh


def _check_shapes(rows: list, errors: list) -> None:
    """What callers other than the gateway may get wrong, refused before anything is written."""
    try:
        for row_no, student_id, status, reason in rows:
            if not (_is_int(row_no) and _is_int(student_id) and status in lifecycle.STATUSES):
                raise ValueError
            if reason is not None and not (isinstance(reason, str) and len(reason) <= MAX_REASON):
                raise ValueError
        for row_no, code, message, details in errors:
            if not (
                _is_int(row_no) and isinstance(code, str) and isinstance(message, str) and isinstance(details, dict)
            ):
                raise ValueError
    except (TypeError, ValueError):
        raise ValidationFailed(
            "Rows are [row_no, student_id, status, reason]; refused rows [row_no, code, message, details].",
            {"rows": ["Invalid row."]},
        ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def seal(session: Session, job_id: str, upload: str, total: int) -> None:
    """The upload is complete: refuse duplicate rows; the rest are the applier's from now on."""
    job = _receiving(session, job_id, upload)
    received = _count(session, StatusRequest, job_id) + _count(session, StatusJobError, job_id)
    if received != total:
        raise ValidationFailed("The job's rows do not add up; upload it again.", {"total": total, "received": received})
    now = utcnow()
    _reject_duplicates(session, job_id, now)
    job.total, job.sealed_at = total, now
    if _dialect(session) == "postgresql":
        # a large job changes the tables' shape at once: fresh statistics keep the
        # applier's query on the queue's order instead of sorting it all
        session.execute(text("ANALYZE status_pending, status_requests"))


def _reject_duplicates(session: Session, job_id: str, now: datetime) -> None:
    """Rows asking for the status the same student's previous row in this job asked for."""
    duplicates = session.execute(
        text(
            "SELECT seq, previous_row FROM ("
            " SELECT seq, target_status,"
            "  LAG(target_status) OVER (PARTITION BY student_id ORDER BY row_no) AS previous_status,"
            "  LAG(row_no) OVER (PARTITION BY student_id ORDER BY row_no) AS previous_row"
            " FROM status_requests WHERE job_id = :job_id"
            ") AS ordered WHERE target_status = previous_status"
        ),
        {"job_id": job_id},
    ).all()
    if duplicates:
        session.execute(
            update(StatusRequest),
            [
                {
                    "seq": seq,
                    "state": REJECTED,
                    "error_code": DUPLICATE_ROW,
                    "error_message": f"Repeats row {previous_row} for the same student.",
                    "updated_at": now,
                }
                for seq, previous_row in duplicates
            ],
        )


def discard(session: Session, job_id: str, upload: str) -> None:
    """Forget an upload that failed before it was complete (after a chunk being recorded: its lock)."""
    job = session.get(StatusJob, job_id, with_for_update=True)
    if job is None or job.upload != upload or job.sealed_at is not None:
        return
    _drop_rows(session, job_id)
    session.delete(job)


def _drop_rows(session: Session, job_id: str) -> None:
    session.execute(delete(StatusRequest).where(StatusRequest.job_id == job_id))  # none applied before the seal
    session.execute(delete(StatusJobError).where(StatusJobError.job_id == job_id))


def _count(session: Session, model: type, job_id: str) -> int:
    return session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id)) or 0


def row_counts(session: Session, job: StatusJob) -> tuple[dict[str, int], int]:
    """A job's rows by state, and how many it has received: pending ones counted in the queue,
    rejected and failed ones through the partial index of requests with an error (rows refused
    before they became requests are rejected too), applied ones the rest of its requests (a
    sealed job's requests are its total less the refused rows: the seal checked they add up)."""
    pending = session.scalar(select(func.count()).select_from(StatusPending).where(StatusPending.job_id == job.id)) or 0
    errored = dict(
        session.execute(
            select(StatusRequest.state, func.count())
            .where(StatusRequest.job_id == job.id, StatusRequest.error_code.is_not(None))
            .group_by(StatusRequest.state)
        ).all()
    )
    refused = _count(session, StatusJobError, job.id)
    requests = job.total - refused if job.total is not None else _count(session, StatusRequest, job.id)
    counts = {
        "pending": pending,
        "applied": requests - pending - sum(errored.values()),
        "rejected": errored.get(REJECTED, 0) + refused,
        "failed": errored.get(FAILED, 0),
    }
    return counts, requests + refused


def progress(session: Session, job_id: str, errors_shown: int) -> dict[str, Any]:
    """Counts, rate and the first ``errors_shown`` row errors of a job."""
    job = session.get(StatusJob, job_id)
    if job is None:
        raise JobNotFound(f"Job {job_id} not found.", {"job_id": job_id})
    counts, received = row_counts(session, job)
    finished_at = None
    if job.sealed_at is None:
        state = RECEIVING
    elif counts["pending"]:
        state = RUNNING
    else:
        state = DONE
        last = session.scalar(select(func.max(StatusRequest.updated_at)).where(StatusRequest.job_id == job_id))
        finished_at = max(last or job.sealed_at, job.sealed_at)
    done = counts["applied"] + counts["rejected"] + counts["failed"]
    elapsed = ((finished_at or utcnow()) - job.created_at).total_seconds()
    return {
        "job_id": job.id,
        "state": state,
        "total": job.total if job.total is not None else received,
        **counts,
        "rows_per_second": round(done / elapsed, 1) if elapsed > 0 else None,
        "actor": job.actor,
        "on_behalf_of": job.on_behalf_of,
        "idempotency_key": job.idempotency_key,
        "correlation_id": job.correlation_id,
        "created_at": job.created_at.isoformat(),
        "sealed_at": job.sealed_at.isoformat() if job.sealed_at else None,
        "finished_at": finished_at.isoformat() if finished_at else None,
        "errors": _first_errors(session, job_id, errors_shown),
    }


def job_errors(session: Session, job_id: str, after_row: int, limit: int) -> list[dict]:
    """The job's row errors after row ``after_row``, by row: a page of the whole list."""
    if session.get(StatusJob, job_id) is None:
        raise JobNotFound(f"Job {job_id} not found.", {"job_id": job_id})
    return _first_errors(session, job_id, limit, after_row)


def recent(session: Session, limit: int, before: datetime | None) -> list[StatusJob]:
    """Jobs, newest first, created before ``before`` (a page of the list)."""
    query = select(StatusJob).order_by(StatusJob.created_at.desc(), StatusJob.id).limit(limit)
    if before is not None:
        query = query.where(StatusJob.created_at < before)
    return list(session.scalars(query))


def _first_errors(session: Session, job_id: str, limit: int, after_row: int = 0) -> list[dict]:
    refused = [
        {"row": e.row_no, "code": e.code, "message": e.message, "details": e.details}
        for e in session.scalars(
            select(StatusJobError)
            .where(StatusJobError.job_id == job_id, StatusJobError.row_no > after_row)
            .order_by(StatusJobError.row_no)
            .limit(limit)
        )
    ]
    rejected = [
        {
            "row": r.row_no,
            "code": r.error_code,
            "message": r.error_message,
            "details": {"student_id": r.student_id, "status": r.target_status, "request_id": r.id},
        }
        for r in session.execute(
            select(
                StatusRequest.row_no,
                StatusRequest.error_code,
                StatusRequest.error_message,
                StatusRequest.student_id,
                StatusRequest.target_status,
                StatusRequest.id,
            )
            .where(
                StatusRequest.job_id == job_id,
                StatusRequest.error_code.is_not(None),  # rejected or failed
                StatusRequest.row_no > after_row,
            )
            .order_by(StatusRequest.row_no)
            .limit(limit)
        )
    ]
    return sorted(refused + rejected, key=lambda error: error["row"])[:limit]
