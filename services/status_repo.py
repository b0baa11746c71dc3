"""Database operations of the status service (its own tables only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import lifecycle
from services.exceptions import IdempotencyKeyReused, StatusRequestNotFound, StudentNotFound
from services.models import StatusHistory, StatusOutbox, StatusRequest, StudentStatus, utcnow
from services.pagination import keyset, page

PENDING, APPLIED, REJECTED, FAILED = "pending", "applied", "rejected", "failed"
STUDENT_NOT_FOUND = "STUDENT_NOT_FOUND"


# --- requests ---------------------------------------------------------------


def find_request(session: Session, request_id: str) -> StatusRequest | None:
    return session.scalar(select(StatusRequest).where(StatusRequest.id == request_id))


def get_request(session: Session, request_id: str) -> StatusRequest:
    request = find_request(session, request_id)
    if request is None:
        raise StatusRequestNotFound(f"Status request {request_id} not found.", {"request_id": request_id})
    return request


def _same_request(existing: StatusRequest, command: dict) -> StatusRequest:
    if existing.student_id != command["student_id"] or existing.target_status != command["status"]:
        raise IdempotencyKeyReused(
            "This idempotency key was already used for a different request.",
            {"idempotency_key": command["idempotency_key"], "request_id": existing.id},
        )
    return existing


def _existing(session: Session, command: dict) -> StatusRequest | None:
    if command.get("request_id"):
        found = find_request(session, str(command["request_id"]))
        if found is not None:
            return found
    if command.get("idempotency_key"):
        found = session.scalar(
            select(StatusRequest).where(
                StatusRequest.student_id == command["student_id"],
                StatusRequest.idempotency_key == command["idempotency_key"],
            )
        )
        if found is not None:
            return _same_request(found, command)
    return None


def submit(session_factory, command: dict) -> tuple[StatusRequest, bool]:
    """Record a request as pending, or return the one it repeats.

    Returns ``(request, created)``. Runs its own transaction so that a lost race
    on the idempotency key (or the request id) resolves to the winner's row.

    A request that arrives with its id already issued (the gateway's, answered
    202) and reuses a key for a different change cannot be refused any more: it
    is recorded as rejected with ``IDEMPOTENCY_KEY_REUSED``.
    """
    for _ in range(2):
        with session_factory(close_on_exit=True) as session:
            rejection = None
            try:
                existing = _existing(session, command)
            except IdempotencyKeyReused as exc:
                if not command.get("request_id"):
                    raise
                existing, rejection = None, exc
            if existing is not None:
                return existing, False
            session.add(request := _new_request(command, rejection))
            try:
                session.commit()
                return request, True
            except IntegrityError:
                session.rollback()
    with session_factory(close_on_exit=True) as session:  # the winner of the race is committed now
        existing = _existing(session, command)
        if existing is None:
            raise RuntimeError("request vanished after a unique-key conflict")
        return existing, False


def _new_request(command: dict, rejection: IdempotencyKeyReused | None) -> StatusRequest:
    now = utcnow()
    request = StatusRequest(
        id=str(command.get("request_id") or uuid.uuid4()),
        student_id=command["student_id"],
        target_status=command["status"],
        reason=command.get("reason"),
        actor=command.get("actor"),
        idempotency_key=None if rejection else command.get("idempotency_key"),
        course=command.get("course"),
        state=PENDING,
        created_at=now,
        updated_at=now,
    )
    if rejection is not None:
        request.state, request.error_code, request.error_message = REJECTED, rejection.code, rejection.message
    return request


# --- students known to the status service -----------------------------------


def ensure_student(session: Session, student_id: int) -> bool:
    """Start tracking a student at the initial status; False if already known."""
    if session.get(StudentStatus, student_id) is not None:
        return False
    session.add(StudentStatus(student_id=student_id, status=lifecycle.INITIAL_STATUS, version=0))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    return True


def mark_deleted(session: Session, student_id: int) -> None:
    row = session.get(StudentStatus, student_id)
    if row is None:
        session.add(StudentStatus(student_id=student_id, status=lifecycle.INITIAL_STATUS, deleted=True))
    else:
        row.deleted = True


def current(session: Session, student_id: int) -> StudentStatus:
    row = session.get(StudentStatus, student_id)
    if row is None or row.deleted:
        raise StudentNotFound(f"Student {student_id} not found.", {"student_id": student_id})
    return row


def history_page(session: Session, student_id: int, limit: int, cursor: str | None):
    return page(list(session.scalars(keyset(StatusHistory, limit, cursor, student_id=student_id))), limit)


# --- applying a batch -------------------------------------------------------


@dataclass
class BatchResult:
    applied: int = 0
    noops: int = 0
    rejected: int = 0
    deferred: int = 0
    events: int = 0
    unknown_students: set[int] = field(default_factory=set)

    @property
    def handled(self) -> int:
        return self.applied + self.noops + self.rejected


def due_unknown_students(session: Session, limit: int) -> set[int]:
    """Students with pending requests that the status service does not track yet."""
    rows = session.execute(
        select(StatusRequest.student_id)
        .outerjoin(StudentStatus, StudentStatus.student_id == StatusRequest.student_id)
        .where(StatusRequest.state == PENDING, StudentStatus.student_id.is_(None))
        .distinct()
        .limit(limit)
    )
    return {row.student_id for row in rows}


def reject_unknown(session: Session, student_id: int) -> None:
    session.execute(
        update(StatusRequest)
        .where(StatusRequest.student_id == student_id, StatusRequest.state == PENDING)
        .values(
            state=REJECTED,
            error_code=STUDENT_NOT_FOUND,
            error_message=f"Student {student_id} not found.",
            updated_at=utcnow(),
        )
    )


def apply_pending(session: Session, limit: int, now: datetime | None = None) -> BatchResult:
    """Apply up to ``limit`` pending requests, oldest first, in this transaction.

    Status rows are locked in student-id order (``FOR UPDATE`` on PostgreSQL;
    SQLite serialises writers), so two status instances never apply a
    transition from a stale status and never deadlock on each other.
    """
    now = now or utcnow()
    result = BatchResult()
    requests = list(
        session.scalars(
            select(StatusRequest)
            # only students already tracked: unknown ones wait for resolution
            # without holding up everyone else
            .join(StudentStatus, StudentStatus.student_id == StatusRequest.student_id)
            .where(StatusRequest.state == PENDING)
            .order_by(StatusRequest.seq)
            .limit(limit)
            .with_for_update(skip_locked=True, of=StatusRequest)
        )
    )
    if not requests:
        return result
    student_ids = sorted({r.student_id for r in requests})
    statuses = {
        row.student_id: row
        for row in session.scalars(
            select(StudentStatus)
            .where(StudentStatus.student_id.in_(student_ids))
            .order_by(StudentStatus.student_id)
            .with_for_update()
        )
    }
    for request in requests:
        row = statuses.get(request.student_id)
        if row is None:  # not known yet: the caller resolves it with the students service
            result.deferred += 1
            result.unknown_students.add(request.student_id)
            continue
        request.updated_at = now
        request.attempts += 1
        request.from_status = row.status
        if row.deleted:
            request.state, request.error_code = REJECTED, STUDENT_NOT_FOUND
            request.error_message = f"Student {request.student_id} was deleted."
            result.rejected += 1
            continue
        decision = lifecycle.decide(row.status, request.target_status)
        if decision.outcome == "reject":
            request.state, request.error_code = REJECTED, decision.error
            request.error_message = lifecycle.describe_rejection(row.status, request.target_status)
            result.rejected += 1
        elif decision.outcome == "noop":
            request.state = APPLIED
            result.noops += 1
        else:
            _apply(session, request, row, now)
            result.applied += 1
            result.events += 1
    return result


def _apply(session: Session, request: StatusRequest, row: StudentStatus, now: datetime) -> None:
    row.version += 1
    entry = StatusHistory(
        student_id=request.student_id,
        from_status=row.status,
        to_status=request.target_status,
        reason=request.reason,
        actor=request.actor,
        request_id=request.id,
        version=row.version,
        occurred_at=now,
    )
    row.status, row.updated_at = request.target_status, now
    request.state = APPLIED
    session.add(entry)
    session.add(
        StatusOutbox(
            event_type="student_status_changed",
            payload={
                "student_id": entry.student_id,
                "from_status": entry.from_status,
                "to_status": entry.to_status,
                "reason": entry.reason,
                "actor": entry.actor,
                "request_id": entry.request_id,
                "course": request.course,
                "version": entry.version,
                "occurred_at": now.isoformat(),
            },
            created_at=now,
        )
    )
