"""Database operations of the status service (its own tables only)."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import lifecycle
from services._status.models import StatusHistory, StatusPending, StatusRequest, StudentStatus
from services.exceptions import IdempotencyKeyReused, StatusRequestNotFound, StudentNotFound
from services.infra import correlation, tracing
from services.infra.db import among, insert_ignoring_duplicates, insert_or_ignore
from services.infra.ids import uuid7
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
        try:
            with session_factory.begin() as session:
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
                session.flush()
                enqueue(session, StatusRequest.seq == request.seq)
            return request, True
        except IntegrityError:
            continue  # a concurrent request with the same key or id was committed first
    with session_factory() as session:  # the winner of the race is committed now
        existing = _existing(session, command)
        if existing is None:
            raise RuntimeError("request vanished after a unique-key conflict")
        return existing, False


def submit_many(session_factory, commands: list[dict]) -> None:
    """Record many requests as pending, in the order given (their ``seq``, the order they apply in).

    Each run of requests with an issued id and no idempotency key (the gateway's,
    accepted together) is inserted in one executemany that skips ids already
    recorded (a redelivered event); the others go through :func:`submit` one by
    one, in their place. Each keeps its own correlation id (the message's, if it has none).
    """
    for plain, run in itertools.groupby(commands, _plain):
        if plain:
            with session_factory.begin() as session:
                rows = [_new_row(c) for c in run]
                insert_ignoring_duplicates(session, StatusRequest.__table__, rows)
                enqueue(session, among(session, StatusRequest.id, [row["id"] for row in rows]))
        else:
            for command in run:
                submit(session_factory, command)


def enqueue(session: Session, *recorded: Any) -> None:
    """Put the requests just recorded that ``recorded`` selects, those pending, in the applier's
    queue (``status_pending``; one already there, a repeat's, stays as it is). Leaving the queue is
    the database's work (triggers: ``models.PENDING_QUEUE``); joining it is a statement per batch,
    not a trigger: SQLite runs a row trigger per row inserted (13 µs a job row, measured)."""
    session.execute(
        insert_or_ignore(session, StatusPending.__table__).from_select(
            ["seq", "student_id", "job_id"],
            select(StatusRequest.seq, StatusRequest.student_id, StatusRequest.job_id).where(
                StatusRequest.state == PENDING, *recorded
            ),
        )
    )


def _plain(command: dict) -> bool:
    return bool(command.get("request_id") and not command.get("idempotency_key"))


def _new_row(command: dict) -> dict:
    now = utcnow()
    return {
        "id": str(command["request_id"]),
        "student_id": command["student_id"],
        "target_status": command["status"],
        "reason": command.get("reason"),
        "actor": command.get("actor"),
        # .get: commands of old messages still queued have no on_behalf_of
        "on_behalf_of": command.get("on_behalf_of"),
        "course": command.get("course"),
        "correlation_id": _correlation_id(command),
        "traceparent": _traceparent(command),
        "state": PENDING,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _new_request(command: dict, rejection: IdempotencyKeyReused | None) -> StatusRequest:
    now = utcnow()
    request = StatusRequest(
        id=str(command.get("request_id") or uuid7()),
        student_id=command["student_id"],
        target_status=command["status"],
        reason=command.get("reason"),
        actor=command.get("actor"),
        on_behalf_of=command.get("on_behalf_of"),
        idempotency_key=None if rejection else command.get("idempotency_key"),
        course=command.get("course"),
        correlation_id=_correlation_id(command),
        traceparent=_traceparent(command),
        state=PENDING,
        created_at=now,
        updated_at=now,
    )
    if rejection is not None:
        request.state, request.error_code, request.error_message = REJECTED, rejection.code, rejection.message
    return request


def _correlation_id(command: dict) -> str | None:
    """The request's own correlation id, else the id of the work in hand (its caller's)."""
    return command.get("correlation_id") or correlation.current()


def _traceparent(command: dict) -> str | None:
    """The span the request was recorded under (traces on): its own, else the work in hand's."""
    return command.get("traceparent") or tracing.current_traceparent()


# --- students known to the status service -----------------------------------


def ensure_student(session: Session, student_id: int) -> bool:
    """Start tracking a student at the initial status; False if already known."""
    if session.get(StudentStatus, student_id) is not None:
        return False
    row = {"student_id": student_id, "status": lifecycle.INITIAL_STATUS, "version": 0}
    return session.execute(insert_or_ignore(session, StudentStatus.__table__), row).rowcount == 1


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
