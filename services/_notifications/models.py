"""The notifications service's table: the mail log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.infra.models import UTCDateTime, utcnow


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
    message_id: Mapped[str] = mapped_column(String(300))
    # of the change or certificate the mail is about: its X-Correlation-ID header
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    # the span that recorded it (traces on): sending it is that span's child
    traceparent: Mapped[str | None] = mapped_column(String(55))
    state: Mapped[str] = mapped_column(String(10), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attachments: Mapped[list[NotificationAttachment]] = relationship(
        order_by="NotificationAttachment.position", cascade="all, delete-orphan", lazy="raise"
    )


class NotificationAttachment(NotificationsBase):
    """A file a mail carries (a certificate's PDF, its signed credential), in order."""

    __tablename__ = "notification_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)
