"""Database operations of the status service (its own tables only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import lifecycle
from services._status.models import StatusHistory, StatusJob, StatusOutbox, StatusRequest, StudentStatus
from services.exceptions import IdempotencyKeyReused, StatusRequestNotFound, StudentNotFound
from services.infra.db import insert_ignoring_duplicates
from services.infra.models import utcnow
from services.infra.pagination import keyset, page

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


def submit_many(session_factory, commands: list[dict]) -> None:
    """Record many requests as pending.

    Requests with an issued id and no idempotency key (the gateway's, accepted
    together) are inserted in one executemany that skips ids already recorded
    (a redelivered event); the others go through :func:`submit` one by one.
    """
    plain = [c for c in commands if c.get("request_id") and not c.get("idempotency_key")]
    if plain:
        with session_factory.begin() as session:
            insert_ignoring_duplicates(session, StatusRequest.__table__, [_new_row(c) for c in plain])
    for command in commands:
        if not (command.get("request_id") and not command.get("idempotency_key")):
            submit(session_factory, command)


def _new_row(command: dict) -> dict:
    now = utcnow()
    return {
        "id": str(command["request_id"]),
        "student_id": command["student_id"],
        "target_status": command["status"],
        "reason": command.get("reason"),
        "actor": command.get("actor"),
        "course": command.get("course"),
        "state": PENDING,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


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
    events: int = 0

    @property
    def handled(self) -> int:
        return self.applied + self.noops + self.rejected


def released():
    """Pending requests the applier may take: not rows of a bulk job whose
    upload is still going on (those wait for its seal, all together)."""
    receiving = select(StatusJob.id).where(StatusJob.sealed_at.is_(None))
    return or_(StatusRequest.job_id.is_(None), StatusRequest.job_id.not_in(receiving))


def due_unknown_students(session: Session, limit: int) -> set[int]:
    """Students with pending requests that the status service does not track yet."""
    rows = session.execute(
        select(StatusRequest.student_id)
        .outerjoin(StudentStatus, StudentStatus.student_id == StatusRequest.student_id)
        .where(StatusRequest.state == PENDING, StudentStatus.student_id.is_(None), released())
        .distinct()
        .limit(limit)
    )
    return {row.student_id for row in rows}


def reject_unknown(session: Session, student_id: int) -> None:
    session.execute(
        update(StatusRequest)
        .where(StatusRequest.student_id == student_id, StatusRequest.state == PENDING, released())
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
    transition from a stale status and never deadlock on each other. Writes are
    executemany statements (requests, statuses, history) and one outbox row
    carrying the batch's events in order.
    """
    now = now or utcnow()
    result = BatchResult()
    requests = session.execute(
        select(
            StatusRequest.seq,
            StatusRequest.id,
            StatusRequest.student_id,
            StatusRequest.target_status,
            StatusRequest.reason,
            StatusRequest.actor,
            StatusRequest.course,
        )
        # only students already tracked: unknown ones wait for resolution
        # without holding up everyone else
        .join(StudentStatus, StudentStatus.student_id == StatusRequest.student_id)
        .where(StatusRequest.state == PENDING, released())
        .order_by(StatusRequest.seq)
        .limit(limit)
        .with_for_update(skip_locked=True, of=StatusRequest)
    ).all()
    if not requests:
        return result
    statuses = {
        row.student_id: {
            "student_id": row.student_id,
            "status": row.status,
            "version": row.version,
            "read_version": row.version,
            "deleted": row.deleted,
        }
        for row in session.execute(
            select(StudentStatus.student_id, StudentStatus.status, StudentStatus.version, StudentStatus.deleted)
            .where(StudentStatus.student_id.in_(sorted({r.student_id for r in requests})))
            .order_by(StudentStatus.student_id)
            .with_for_update()
        )
    }
    outcomes, history, changes, changed = [], [], [], {}
    for request in requests:
        row = statuses[request.student_id]
        outcome = {
            "seq": request.seq,
            "state": APPLIED,
            "from_status": row["status"],
            "error_code": None,
            "error_message": None,
        }
        outcomes.append(outcome)
        if row["deleted"]:
            outcome.update(
                state=REJECTED,
                error_code=STUDENT_NOT_FOUND,
                error_message=f"Student {request.student_id} was deleted.",
            )
            result.rejected += 1
            continue
        decision = lifecycle.decide(row["status"], request.target_status)
        if decision.outcome == "reject":
            outcome.update(
                state=REJECTED,
                error_code=decision.error,
                error_message=lifecycle.describe_rejection(row["status"], request.target_status),
            )
            result.rejected += 1
        elif decision.outcome == "noop":
            result.noops += 1
        else:
            change = _change(request, row, now)
            history.append(
                {k: v for k, v in change.items() if k not in ("course", "occurred_at")} | {"occurred_at": now}
            )
            changes.append(change)
            row["status"], row["version"] = request.target_status, change["version"]
            changed[row["student_id"]] = row
            result.applied += 1
    # one UPDATE per distinct outcome (a handful per batch), not one per row
    for (state, from_status, error_code, error_message), seqs in _grouped(
        outcomes, lambda o: (o["state"], o["from_status"], o["error_code"], o["error_message"]), "seq"
    ):
        session.execute(
            update(StatusRequest)
            .where(StatusRequest.seq.in_(seqs))
            .values(
                state=state,
                from_status=from_status,
                error_code=error_code,
                error_message=error_message,
                attempts=StatusRequest.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    if changed:
        for (status, steps), student_ids in _grouped(
            changed.values(), lambda r: (r["status"], r["version"] - r["read_version"]), "student_id"
        ):
            session.execute(
                update(StudentStatus)
                .where(StudentStatus.student_id.in_(student_ids))
                .values(status=status, version=StudentStatus.version + steps, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        session.execute(insert(StatusHistory.__table__), history)
        session.add(StatusOutbox(event_type="student_status_changed", payload={"changes": changes}, created_at=now))
        result.events = len(changes)
    return result


def _grouped(items, key, field: str) -> list[tuple[tuple, list]]:
    """``[(key, [item[field], ...]), ...]`` in first-seen order."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item[field])
    return list(groups.items())


def _change(request: Any, row: dict, now: datetime) -> dict:
    """One ``student_status_changed`` event (and, less ``course``, its history row)."""
    return {
        "student_id": request.student_id,
        "from_status": row["status"],
        "to_status": request.target_status,
        "reason": request.reason,
        "actor": request.actor,
        "request_id": request.id,
        "course": request.course,
        "version": row["version"] + 1,
        "occurred_at": now.isoformat(),
    }
