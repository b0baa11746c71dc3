"""What the operations console asks of the status service: requests found by any of their ids,
newest first, in keyset pages; and the state of the pipeline in one call."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services._status.batches import waiting
from services._status.models import StatusHistory, StatusOutbox, StatusPending, StatusRequest
from services._status.repo import PENDING
from services.infra.models import utcnow
from services.infra.pagination import decode_cursor, encode_cursor


def search(session: Session, filters: dict[str, Any]) -> tuple[list[StatusRequest], str | None]:
    """Requests matching every filter given, newest first; the cursor names the last one shown."""
    limit = filters["limit"]
    query = select(StatusRequest).order_by(StatusRequest.seq.desc()).limit(limit + 1)
    before = decode_cursor(filters.get("cursor"))
    if before is not None:
        query = query.where(StatusRequest.seq < before)
    if filters.get("request_id") is not None:
        query = query.where(StatusRequest.id == str(filters["request_id"]))
    for column in ("correlation_id", "student_id", "state"):
        if filters.get(column) is not None:
            query = query.where(getattr(StatusRequest, column) == filters[column])
    if filters.get("state") == PENDING:  # the queue's rows: no scan of the requests for the few pending
        query = query.where(StatusRequest.seq.in_(select(StatusPending.seq)))
    if filters.get("since") is not None:
        query = query.where(StatusRequest.created_at >= filters["since"])
    if filters.get("until") is not None:
        query = query.where(StatusRequest.created_at < filters["until"])
    rows = list(session.scalars(query))
    items = rows[:limit]
    return items, encode_cursor(items[-1].seq) if len(rows) > limit else None


def overview(session: Session) -> dict[str, Any]:
    """The applier's backlog and the outbox: one cheap query each, on their indexes."""
    now = utcnow()
    pending, oldest = waiting(session)
    outbox = session.scalar(select(func.count()).select_from(StatusOutbox)) or 0  # every row is unsent
    outbox_oldest = session.scalar(select(func.min(StatusOutbox.created_at)))
    return {
        # running totals (ids only grow): the console's rates are their differences over time
        "recorded_total": session.scalar(select(func.max(StatusRequest.seq))) or 0,
        "applied_total": session.scalar(select(func.max(StatusHistory.id))) or 0,
        "pending": pending,
        "oldest_pending_age": _age(now, oldest),
        "outbox_pending": outbox,
        "outbox_oldest_age": _age(now, outbox_oldest),
    }


def _age(now, then) -> float:
    return max((now - then).total_seconds(), 0.0) if then is not None else 0.0
