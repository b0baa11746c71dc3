"""The status service's applier, database side: one batch of pending requests
applied in one transaction (statuses, history, outbox), and students it does not know."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from services import lifecycle
from services._status.models import (
    StatusHistory,
    StatusJob,
    StatusOutbox,
    StatusPending,
    StatusRequest,
    StudentStatus,
)
from services._status.repo import APPLIED, PENDING, REJECTED, STUDENT_NOT_FOUND
from services.infra import tracing
from services.infra.db import among, insert_many, json_dumps
from services.infra.models import utcnow


class Pending(NamedTuple):
    """A pending request as the applier reads it."""

    seq: int
    id: str
    student_id: int
    target_status: str
    reason: str | None
    actor: str | None
    on_behalf_of: str | None
    course: str | None
    correlation_id: str | None
    traceparent: str | None


@dataclass
class BatchResult:
    applied: int = 0
    noops: int = 0
    rejected: int = 0
    events: int = 0
    # what became of each request, for the log: (the request's row, its outcome)
    outcomes: list[tuple[Any, dict]] = field(default_factory=list)
    # traces on: an ``apply status change`` span per request recorded under one, ended once committed
    spans: list[Any] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.applied + self.noops + self.rejected


def released():
    """Pending requests (rows of ``status_pending``) the applier may take: not rows of a bulk
    job whose upload is still going on (those wait for its seal, all together)."""
    receiving = select(StatusJob.id).where(StatusJob.sealed_at.is_(None))
    return or_(StatusPending.job_id.is_(None), StatusPending.job_id.not_in(receiving))


def waiting(session: Session) -> tuple[int, datetime | None]:
    """How many pending requests the applier may take, and when the oldest of them was recorded."""
    count = session.scalar(select(func.count()).select_from(StatusPending).where(released())) or 0
    # the first in the queue, then its request by its key (a join may walk every applied request)
    first = session.scalar(select(StatusPending.seq).where(released()).order_by(StatusPending.seq).limit(1))
    if first is None:
        return count, None
    return count, session.scalar(select(StatusRequest.created_at).where(StatusRequest.seq == first))


UNKNOWN_SCAN = 100_000  # pending requests looked at per round for students not tracked yet


def due_unknown_students(session: Session, limit: int) -> set[int]:
    """Students with pending requests that the status service does not track yet, among the
    oldest ``UNKNOWN_SCAN`` pending requests, read in arrival order from the queue."""
    pending = (
        select(StatusPending.student_id).where(released()).order_by(StatusPending.seq).limit(UNKNOWN_SCAN).subquery()
    )
    rows = session.execute(
        select(pending.c.student_id)
        .outerjoin(StudentStatus, StudentStatus.student_id == pending.c.student_id)
        .where(StudentStatus.student_id.is_(None))
        .distinct()
        .limit(limit)
    )
    return {row.student_id for row in rows}


def reject_unknown(session: Session, student_id: int) -> int:
    """Reject the pending requests of a student who does not exist; how many. Their places in the
    queue are locked first, as the applier locks the ones it takes."""
    seqs = session.scalars(
        select(StatusPending.seq).where(StatusPending.student_id == student_id, released()).with_for_update()
    ).all()
    if not seqs:
        return 0
    return session.execute(
        update(StatusRequest)
        .where(among(session, StatusRequest.seq, seqs), StatusRequest.state == PENDING)
        .values(
            state=REJECTED,
            error_code=STUDENT_NOT_FOUND,
            error_message=f"Student {student_id} not found.",
            updated_at=utcnow(),
        )
    ).rowcount


# the most a batch's events put in one message, as stored and published (compact UTF-8 JSON): well under what
# consumers take (MAX_MESSAGE_BYTES, 4 MiB by default) whatever the reasons, actors and courses hold
MESSAGE_BYTES = 1024 * 1024


def apply_pending(
    session: Session, limit: int, now: datetime | None = None, message_bytes: int = MESSAGE_BYTES
) -> BatchResult:
    """Apply up to ``limit`` pending requests, oldest first, in this transaction.

    Status rows are locked in student-id order (``FOR UPDATE`` on PostgreSQL;
    SQLite serialises writers), so two status instances never apply a
    transition from a stale status and never deadlock on each other. Writes are
    executemany statements (requests, statuses, history) and outbox rows
    carrying the batch's events in order, as few as fit ``message_bytes`` each.
    """
    now = now or utcnow()
    result = BatchResult()
    claimed = (
        session.execute(
            select(StatusPending.seq)
            # only students already tracked: unknown ones wait for resolution
            # without holding up everyone else
            .join(StudentStatus, StudentStatus.student_id == StatusPending.student_id)
            .where(released())
            .order_by(StatusPending.seq)
            .limit(limit)
            # their places in the queue: another instance passes them over
            .with_for_update(skip_locked=True, of=StatusPending)
        )
        .scalars()
        .all()
    )
    if not claimed:
        return result
    # the requests by their keys, in a statement of its own: joined to the queue above, PostgreSQL
    # may merge the two keys and so walk every request ever applied before the first pending one
    requests = session.execute(
        select(*(getattr(StatusRequest, name) for name in Pending._fields))
        .where(among(session, StatusRequest.seq, claimed))
        .order_by(StatusRequest.seq)
    ).all()
    requests = list(map(Pending._make, requests))  # a row's attributes cost ~0.5 µs each, a tuple's 0.03
    statuses = {
        student_id: {
            "student_id": student_id,
            "status": status,
            "version": version,
            "read_version": version,
            "deleted": deleted,
        }
        for student_id, status, version, deleted in session.execute(
            select(StudentStatus.student_id, StudentStatus.status, StudentStatus.version, StudentStatus.deleted)
            .where(among(session, StudentStatus.student_id, sorted({r.student_id for r in requests})))
            .order_by(StudentStatus.student_id)
            .with_for_update()
        )
    }
    requests = _in_turn(session, requests)
    if not requests:
        return result
    outcomes, history, changes, changed = [], [], [], {}
    occurred_at = now.isoformat()
    started_ns = time.time_ns()
    traced = tracing.enabled()
    for request in requests:
        span = _apply_span(request, started_ns) if traced and request.traceparent else None
        if span is not None:
            result.spans.append(span)
        row = statuses[request.student_id]
        outcome = {
            "seq": request.seq,
            "state": APPLIED,
            "from_status": row["status"],
            "error_code": None,
            "error_message": None,
        }
        outcomes.append(outcome)
        result.outcomes.append((request, outcome))
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
            change = _change(request, row, occurred_at, tracing.traceparent_of(span) if span is not None else None)
            history.append(_history_row(change, request, now))
            changes.append(change)
            row["status"], row["version"] = request.target_status, change["version"]
            changed[row["student_id"]] = row
            result.applied += 1
        if span is not None:
            span.set_attribute("mensageria.status_request.state", outcome["state"])
            if outcome["error_code"]:
                span.set_attribute("mensageria.status_request.error_code", outcome["error_code"])
    # one UPDATE per distinct outcome (a handful per batch), not one per row
    for (state, from_status, error_code, error_message), seqs in _grouped(
        outcomes, lambda o: (o["state"], o["from_status"], o["error_code"], o["error_message"]), "seq"
    ):
        session.execute(
            update(StatusRequest)
            .where(among(session, StatusRequest.seq, seqs))
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
                .where(among(session, StudentStatus.student_id, student_ids))
                .values(status=status, version=StudentStatus.version + steps, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        insert_many(session, StatusHistory.__table__, history)
        # one message for the batch (more if it would be too large): its header carries its first
        # change's id, each change its own
        session.add_all(
            StatusOutbox(
                event_type="student_status_changed",
                payload={"changes": part},
                correlation_id=next((c["correlation_id"] for c in part if c["correlation_id"]), None),
                traceparent=next((c["traceparent"] for c in part if c.get("traceparent")), None),
                created_at=now,
            )
            for part in split_by_size(changes, message_bytes)
        )
        result.events = len(changes)
    return result


def split_by_size(changes: list[dict], limit: int) -> list[list[dict]]:
    """``changes`` in order, in runs whose ``{"changes": [...]}`` takes at most ``limit`` bytes as
    the outbox stores it and its relay publishes it (``services.infra.db.json_dumps``: compact
    UTF-8); a change larger than that goes alone, and a run over the limit is halved until its
    parts fit."""
    if len(changes) <= 1 or len(json_dumps({"changes": changes}).encode()) <= limit:
        return [changes]
    half = len(changes) // 2
    return split_by_size(changes[:half], limit) + split_by_size(changes[half:], limit)


def _in_turn(session: Session, requests: list) -> list:
    """The batch without the students whose earlier pending requests another instance
    holds (``SKIP LOCKED`` passed them over): theirs wait for the next round, so every
    student's requests are applied in arrival order whichever instance takes them.
    Read after the status rows are locked: by then an earlier batch that locked them
    first has committed, and its requests are no longer pending."""
    if session.get_bind().dialect.name == "sqlite":
        return requests  # no SKIP LOCKED there: the batch is the oldest pending requests, none passed over
    first_seq: dict[int, int] = {}
    for request in requests:
        first_seq.setdefault(request.student_id, request.seq)
    # only requests older than the batch's can hold a student back: bounded by ``seq``, the query
    # walks the queue from the batch's start (the batch and what SKIP LOCKED passed over), not
    # every pending request of the batch's students (2,000 each in a 1,000,000-row job)
    earliest = dict(
        session.execute(
            select(StatusPending.student_id, func.min(StatusPending.seq))
            .where(
                StatusPending.seq < max(first_seq.values()),
                among(session, StatusPending.student_id, list(first_seq)),
                released(),
            )
            .group_by(StatusPending.student_id)
        ).all()
    )
    held = {student for student, seq in first_seq.items() if earliest.get(student, seq) < seq}
    return [request for request in requests if request.student_id not in held] if held else requests


def _grouped(items, key, field: str) -> list[tuple[tuple, list]]:
    """``[(key, [item[field], ...]), ...]`` in first-seen order."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item[field])
    return list(groups.items())


def _history_row(change: dict, request: Any, now: datetime) -> dict:
    """The history row of an applied change: its event less ``course`` and ``correlation_id``, plus
    ``on_behalf_of`` (kept in the history, not published: the event's payload is unchanged)."""
    return {
        "student_id": change["student_id"],
        "from_status": change["from_status"],
        "to_status": change["to_status"],
        "reason": change["reason"],
        "actor": change["actor"],
        "request_id": change["request_id"],
        "version": change["version"],
        "on_behalf_of": request.on_behalf_of,
        "occurred_at": now,
    }


def _apply_span(request: Any, started_ns: int) -> Any:
    """The ``apply status change`` span of a request recorded under a span (asked only while traces are on)."""
    attributes = {
        "mensageria.status_request.id": request.id,
        "mensageria.student.id": request.student_id,
        "mensageria.status_request.to_status": request.target_status,
    }
    return tracing.start(
        "apply status change", parent=request.traceparent, attributes=attributes, start_time=started_ns
    )


def _change(request: Any, row: dict, occurred_at: str, traceparent: str | None = None) -> dict:
    """One ``student_status_changed`` event (and most of its history row: :func:`_history_row`);
    ``traceparent``: the span that applied it (traces on), which its handlers continue."""
    change = {
        "student_id": request.student_id,
        "from_status": row["status"],
        "to_status": request.target_status,
        "reason": request.reason,
        "actor": request.actor,
        "request_id": request.id,
        "course": request.course,
        "version": row["version"] + 1,
        "occurred_at": occurred_at,
        "correlation_id": request.correlation_id,
    }
    if traceparent:
        change["traceparent"] = traceparent
    return change
