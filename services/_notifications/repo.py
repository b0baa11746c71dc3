"""Database operations of the notifications service (its own table only), and
the schemas of what it accepts and returns.

A notification is ``pending`` until sent (``sent``) or until its last allowed
attempt failed (``failed``); an operator's resend makes it ``pending`` again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services._notifications.mail import Attachment, Mail, Outgoing
from services._notifications.models import Notification, NotificationAttachment
from services.exceptions import NotificationNotFound
from services.infra import correlation, tracing
from services.infra.db import insert_ignoring_duplicates
from services.infra.models import utcnow
from services.infra.pagination import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT, keyset, page
from services.schemas import StrictSchema

PENDING, SENT, FAILED = "pending", "sent", "failed"
STATES = (PENDING, SENT, FAILED)


# --- schemas ----------------------------------------------------------------


class ListNotificationsSchema(StrictSchema):
    student_id = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(1, MAX_ID))
    state = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STATES))
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(load_default=None, allow_none=True)


class AttachmentSummarySchema(Schema):
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer()


class NotificationSchema(Schema):
    """A log entry without its bodies and attachment bytes."""

    id = fields.Integer()
    kind = fields.String()
    dedup_key = fields.String()
    student_id = fields.Integer(allow_none=True)
    recipient = fields.String()
    subject = fields.String()
    message_id = fields.String()
    correlation_id = fields.String(allow_none=True)
    attachments = fields.List(fields.Nested(AttachmentSummarySchema), attribute="attachment_summaries")
    state = fields.String(metadata={"enum": list(STATES)})
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class NotificationDetailSchema(NotificationSchema):
    body_text = fields.String()
    body_html = fields.String()


def retry_delay(base_delay: float, failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: base x 2^(failures-1)."""
    return base_delay * 2 ** max(failures - 1, 0)


# --- recording --------------------------------------------------------------


def exists(session: Session, dedup_key: str) -> bool:
    return session.scalar(select(Notification.id).where(Notification.dedup_key == dedup_key)) is not None


def record(session_factory: sessionmaker, mail: Mail) -> bool:
    """Record ``mail`` as pending in a transaction of its own; False if it already was."""
    try:
        with session_factory.begin() as session:
            if exists(session, mail.dedup_key):
                return False
            notification = Notification(**_pending_row(mail, utcnow()))
            notification.attachments = _attachment_rows(mail)
            session.add(notification)
    except IntegrityError:
        with session_factory() as session:
            if exists(session, mail.dedup_key):
                return False  # a concurrent delivery of the same event recorded it first
        raise
    return True


def record_many(session_factory: sessionmaker, mails: list[Mail]) -> int:
    """Record ``mails`` as pending in one transaction, skipping those already
    recorded (a redelivered event); returns how many were new."""
    if not mails:
        return 0
    with session_factory.begin() as session:
        known = set(
            session.scalars(
                select(Notification.dedup_key).where(Notification.dedup_key.in_([m.dedup_key for m in mails]))
            )
        )
        now = utcnow()
        new = [
            _pending_row(mail, now) for mail in {m.dedup_key: m for m in mails}.values() if mail.dedup_key not in known
        ]
        insert_ignoring_duplicates(session, Notification.__table__, new)  # a concurrent delivery may race us
        carrying = {m.dedup_key: m for m in mails if m.attachments and m.dedup_key not in known}
        if carrying:
            ids = session.execute(
                select(Notification.dedup_key, Notification.id).where(Notification.dedup_key.in_(list(carrying)))
            )
            session.add_all(
                [
                    NotificationAttachment(notification_id=notification_id, **row)
                    for dedup_key, notification_id in ids
                    for row in _attachment_values(carrying[dedup_key])
                ]
            )
    return len(new)


def _attachment_values(mail: Mail) -> list[dict[str, Any]]:
    return [
        {"position": position, "filename": a.filename, "content_type": a.content_type, "data": a.data}
        for position, a in enumerate(mail.attachments)
    ]


def _attachment_rows(mail: Mail) -> list[NotificationAttachment]:
    return [NotificationAttachment(**values) for values in _attachment_values(mail)]


def _pending_row(mail: Mail, now: datetime) -> dict[str, Any]:
    """The columns of a mail recorded as pending, due now."""
    return {
        "kind": mail.kind,
        "dedup_key": mail.dedup_key,
        "student_id": mail.student_id,
        "recipient": mail.recipient,
        "subject": mail.subject,
        "body_text": mail.body_text,
        "body_html": mail.body_html,
        "message_id": mail.message_id,
        "correlation_id": mail.correlation_id or correlation.current(),
        "traceparent": mail.traceparent or tracing.current_traceparent(),
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


# --- sending ----------------------------------------------------------------


def _write_lock_first(session: Session) -> None:
    """On SQLite, which has no row locks: take the database's write lock before reading what to claim
    (``BEGIN IMMEDIATE``), so another instance's claim waits for this one's lease and then sees it.
    Its driver would otherwise read outside any transaction, and two senders could claim one mail."""
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta) -> list[Outgoing]:
    """Up to ``limit`` due pending notifications, oldest due first, leased for ``lease``.

    The lease (``next_attempt_at`` pushed out) keeps other instances off them
    while they are sent outside this transaction, and brings them back if this
    process dies before recording the outcome.
    """
    _write_lock_first(session)
    rows = list(
        session.scalars(
            select(Notification)
            .where(Notification.state == PENDING, Notification.next_attempt_at <= now)
            .order_by(Notification.next_attempt_at, Notification.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL: rows another instance holds are left to it
        )
    )
    files: dict[int, list[Attachment]] = {}
    if rows:
        for item in session.scalars(
            select(NotificationAttachment)
            .where(NotificationAttachment.notification_id.in_([row.id for row in rows]))
            .order_by(NotificationAttachment.notification_id, NotificationAttachment.position)
        ):
            files.setdefault(item.notification_id, []).append(
                Attachment(item.filename, item.content_type, bytes(item.data))
            )
    claimed = []
    for row in rows:
        due_at, row.next_attempt_at = row.next_attempt_at, now + lease
        claimed.append(
            Outgoing(
                id=row.id,
                recipient=row.recipient,
                subject=row.subject,
                body_text=row.body_text,
                body_html=row.body_html,
                attachments=tuple(files.get(row.id, ())),
                message_id=row.message_id,
                created_at=row.created_at,
                attempts=row.attempts,
                kind=row.kind,
                correlation_id=row.correlation_id,
                traceparent=row.traceparent,
                due_at=due_at,
            )
        )
    return claimed


def release(session: Session, mails: list[Outgoing], now: datetime) -> None:
    """Give claimed notifications back unsent, no attempt counted: each due again when it was due
    before its claim (at the latest ``now``), so it keeps its place before the mails recorded
    after it (a recipient's mails go out in order)."""
    by_time: dict[datetime, list[int]] = {}
    for mail in mails:
        due = now if mail.due_at is None else min(mail.due_at, now)
        by_time.setdefault(due, []).append(mail.id)
    for due, ids in by_time.items():
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.state == PENDING)
            .values(next_attempt_at=due)
            .execution_options(synchronize_session=False)
        )


def mark_sent(session: Session, ids: list[int], now: datetime) -> None:
    if not ids:
        return
    session.execute(
        update(Notification)
        .where(Notification.id.in_(ids), Notification.state == PENDING)
        .values(state=SENT, attempts=Notification.attempts + 1, last_error=None, sent_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_failed(
    session: Session, notification_id: int, error: str, now: datetime, max_attempts: int, base_delay: float
) -> str | None:
    """Count a failed attempt: retry after base x 2^(attempts-1), or ``failed`` after the last.

    Returns the new state (None if the notification was not pending any more).
    """
    attempts = session.scalar(
        select(Notification.attempts).where(Notification.id == notification_id, Notification.state == PENDING)
    )
    if attempts is None:
        return None
    attempts += 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": error, "updated_at": now}
    if attempts >= max_attempts:
        values["state"] = FAILED
    else:
        values["next_attempt_at"] = now + timedelta(seconds=retry_delay(base_delay, attempts))
    session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return values.get("state", PENDING)


# --- reading and operating --------------------------------------------------


def _with_sizes(session: Session, query: Any) -> list[Notification]:
    """Rows, each with ``attachment_summaries`` set: name, type and size of each file (no bytes)."""
    rows = list(session.scalars(query))
    summaries: dict[int, list[dict]] = {}
    if rows:
        for notification_id, filename, content_type, size in session.execute(
            select(
                NotificationAttachment.notification_id,
                NotificationAttachment.filename,
                NotificationAttachment.content_type,
                func.length(NotificationAttachment.data),
            )
            .where(NotificationAttachment.notification_id.in_([row.id for row in rows]))
            .order_by(NotificationAttachment.notification_id, NotificationAttachment.position)
        ):
            summaries.setdefault(notification_id, []).append(
                {"filename": filename, "content_type": content_type, "size": size}
            )
    for row in rows:
        row.attachment_summaries = summaries.get(row.id, [])
    return rows


def get(session: Session, notification_id: int) -> Notification:
    rows = _with_sizes(session, select(Notification).where(Notification.id == notification_id))
    if not rows:
        raise NotificationNotFound(f"Notification {notification_id} not found.", {"notification_id": notification_id})
    return rows[0]


def list_page(
    session: Session, student_id: int | None, state: str | None, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    return page(_with_sizes(session, keyset(Notification, limit, cursor, student_id=student_id, state=state)), limit)


def resend(session: Session, notification_id: int, now: datetime) -> tuple[Notification, bool]:
    """Make a ``sent`` or ``failed`` notification pending again, due now, attempts reset.

    A pending one is left as it is (it is going out anyway); returns whether it changed.
    """
    notification = get(session, notification_id)
    if notification.state == PENDING:
        return notification, False
    notification.state = PENDING
    notification.attempts = 0
    notification.last_error = None
    notification.next_attempt_at = now
    notification.updated_at = now
    return notification, True
