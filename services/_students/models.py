"""The students service's tables: profiles and a read copy of each status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.infra.models import OutboxMixin, UTCDateTime, utcnow


class StudentsBase(DeclarativeBase):
    pass


class Student(StudentsBase):
    __tablename__ = "students"
    # SQLite would otherwise give a deleted newest student's id to the next one
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    course: Mapped[str] = mapped_column(String(200), index=True)
    # the language of the student's mail (services.i18n.LANGUAGES); None: the default language
    language: Mapped[str | None] = mapped_column(String(10))
    # read copy of the status service's authority, fed by its events
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_version: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StudentsOutbox(OutboxMixin, StudentsBase):
    pass
