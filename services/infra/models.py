"""Model pieces every service's models share: UTC timestamps and the outbox table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DDL, JSON, DateTime, Integer, String, TypeDecorator, event
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC: identical on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# A batch's events are one outbox row (up to 1 MiB of JSON): PostgreSQL compresses such a value
# before storing it, with pglz by default, 20 ms for a 700 KB batch of 2,000 changes; lz4 takes half
# that, to the same size (where the server is built with it, as PostgreSQL's packages are).
OUTBOX_LZ4 = """DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
END $$"""


class OutboxMixin:
    """Events written in the same transaction as the change that caused them; every row is
    waiting: the relay deletes a row once the broker has confirmed its message."""

    __tablename__ = "outbox"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)  # declarative maps the class: its table exists after this
        # ``create_all`` sets the payload's compression as the migrations do
        event.listen(cls.__table__, "after_create", DDL(OUTBOX_LZ4).execute_if(dialect="postgresql"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # of the work that wrote the row; published as the message's header nameko.correlation_id
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    # the span that wrote it (traces on): its publish is that span's child, as nameko.traceparent
    traceparent: Mapped[str | None] = mapped_column(String(55))
