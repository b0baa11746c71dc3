"""Baseline (b): the original design, one Celery task per status update.

The worker is started by :mod:`benchmarks.celery_bench` as
``celery -A benchmarks.celery_app worker`` with the broker and database in
``BENCH_CELERY_BROKER`` / ``BENCH_CELERY_DB``. Each task does, in one
transaction, what the status service does for one request: read the student's
current status (``FOR UPDATE`` on PostgreSQL), decide with the same
``services.lifecycle`` rules, update the status row, insert a history row and
the request row. The tables are the benchmark's own (``bench_*``), shaped like
the status service's, with the same indexes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from services import lifecycle
from services.infra.db import build_engine  # the same engine settings (SQLite WAL, busy timeout) as the services

app = Celery("mensageria_bench", broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@localhost:5672//"))
app.conf.update(
    task_acks_late=True,  # ack after the task ran, as our services ack after commit
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


class Base(DeclarativeBase):
    pass


class BenchStudentStatus(Base):
    __tablename__ = "bench_student_statuses"

    student_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class BenchStatusRequest(Base):
    __tablename__ = "bench_status_requests"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    student_id: Mapped[int] = mapped_column(Integer, index=True)
    target_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(10), index=True)
    from_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class BenchStatusHistory(Base):
    __tablename__ = "bench_status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[int] = mapped_column(Integer, index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(DateTime)


Session = sessionmaker()


@worker_process_init.connect
def _connect(**_: object) -> None:
    """Each prefork child opens its own engine (connections must not cross a fork)."""
    Session.configure(bind=build_engine(os.environ["BENCH_CELERY_DB"]))


@worker_ready.connect
def _announce(**_: object) -> None:
    """Tell the benchmark the worker consumes (a file, so no broker round trip is needed)."""
    path = os.environ.get("BENCH_CELERY_READY")
    if path:
        open(path, "w").close()


@app.task(name="bench.apply_status_change")
def apply_status_change(request_id: str, student_id: int, target: str, reason: str) -> str:
    now = datetime.now(UTC).replace(tzinfo=None)
    with Session.begin() as session:
        row = session.scalars(
            select(BenchStudentStatus).where(BenchStudentStatus.student_id == student_id).with_for_update()
        ).one()
        decision = lifecycle.decide(row.status, target)
        state = {"apply": "applied", "noop": "applied", "reject": "rejected"}[decision.outcome]
        if decision.outcome == "apply":
            row.version += 1
            session.add(
                BenchStatusHistory(
                    student_id=student_id,
                    from_status=row.status,
                    to_status=target,
                    reason=reason,
                    actor="celery",
                    request_id=request_id,
                    version=row.version,
                    occurred_at=now,
                )
            )
            row.status, row.updated_at = target, now
        session.add(
            BenchStatusRequest(
                id=request_id,
                student_id=student_id,
                target_status=target,
                reason=reason,
                actor="celery",
                state=state,
                from_status=decision.from_status,
                error_code=decision.error,
                created_at=now,
                updated_at=now,
            )
        )
    return state
