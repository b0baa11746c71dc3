"""Scenario (b): the original design — Celery, one task per status update.

A ``celery worker`` process (prefork pool, concurrency 2 = the default on two
cores, ``acks_late``) on its own vhost of the same RabbitMQ; the benchmark's own
tables in a SQLite file or in the PostgreSQL database
``mensageria_bench_celery``. Updates/s from the first enqueue to the moment the
last task's transaction is seen committed. Tasks are enqueued the Celery way
(``delay()``, no publisher confirms: Celery's default).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from benchmarks import celery_app
from benchmarks.core import SQLITE, Context, Row
from benchmarks.cpu import CpuMeter, format_cpu, postgres_pids, rabbitmq_pids
from benchmarks.infra import BIN, ROOT, Cleanup, descendants, scoped, start_process, stop_process
from services.infra.db import build_engine

PG_DATABASE = "mensageria_bench_celery"
CONCURRENCY = 2
START_TIMEOUT = 60.0
POLL = 0.02


def database(ctx: Context, backend: str, cleanup: Cleanup, name: str = "celery") -> str:
    """The baseline's database: on SQLite a file of its own per ``name`` ((b) and (f) each start
    from empty tables in one run), on PostgreSQL one created for the scenario and dropped after it."""
    if backend == SQLITE:
        return f"sqlite:///{ctx.workdir}/{name}.db"
    return ctx.postgres.create_database(cleanup, PG_DATABASE)


def _prepare(db_uri: str, students: int):
    engine = build_engine(db_uri)
    celery_app.Base.metadata.create_all(engine)
    with engine.begin() as connection:
        now = datetime.now(UTC).replace(tzinfo=None)
        connection.execute(
            insert(celery_app.BenchStudentStatus),
            [{"student_id": i, "status": "enrolled", "version": 0, "updated_at": now} for i in range(1, students + 1)],
        )
    return engine


def _wait_for_worker(worker, log_path, ready: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited ({worker.returncode}); see {log_path}")
        if ready.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"celery worker not ready within {START_TIMEOUT:g}s; see {log_path}")


def celery_producer(amqp_uri: str, cleanup: Cleanup):
    """A producer on ``amqp_uri``'s vhost, for ``apply_async(producer=...)``."""
    app = celery_app.app
    app.conf.broker_url = amqp_uri
    # A chain's first task is published through the app's producer pool even when a producer is given, and
    # send_task evaluates that pool on every call: a pool made during an earlier run points at that run's
    # vhost, deleted since. Forget both pools (Celery's own after-fork reset) so they follow broker_url.
    if app._pool is not None:
        app._pool.force_close_all()
    app._after_fork()
    connection = celery_app.app.connection_for_write()  # not the app's pool: each run has its own vhost
    cleanup.push("close celery connection", connection.release)
    return connection.Producer()


def start_worker(
    ctx: Context, cleanup: Cleanup, name: str, amqp_uri: str, db_uri: str, env: dict | None = None, include: str = ""
) -> tuple[subprocess.Popen, Path]:
    """``celery worker`` (prefork, ``CONCURRENCY``) on ``amqp_uri`` and ``db_uri``, consuming once
    this returns; ``include``: a module of more tasks. Returns it and its log."""
    ready = ctx.workdir / f"{name}.ready"
    env = {
        **os.environ,
        "BENCH_CELERY_BROKER": amqp_uri,
        "BENCH_CELERY_DB": db_uri,
        "BENCH_CELERY_READY": str(ready),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    log_path = ctx.workdir / f"{name}.log"
    command = [str(BIN / "celery"), "-A", "benchmarks.celery_app", "worker", "--pool", "prefork"]
    command += ["--concurrency", str(CONCURRENCY), "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
    command += ["--include", include] if include else []
    worker = start_process(cleanup, "celery worker", command, env, log_path)
    _wait_for_worker(worker, log_path, ready)
    return worker, log_path


def run(ctx: Context, backend: str) -> list[Row]:
    # this scenario's worker and database go as soon as it ends
    with scoped(ctx.cleanup, f"celery {backend}") as cleanup:
        return _run(ctx, backend, cleanup)


def _run(ctx: Context, backend: str, cleanup: Cleanup) -> list[Row]:
    amqp_uri = ctx.broker.create_vhost(cleanup, "celery")
    db_uri = database(ctx, backend, cleanup)
    count, students = ctx.sizes.celery_tasks, ctx.sizes.students
    engine = _prepare(db_uri, students)
    cleanup.push("dispose celery engine", engine.dispose)

    producer = celery_producer(amqp_uri, cleanup)
    worker, log_path = start_worker(ctx, cleanup, f"celery-{backend}", amqp_uri, db_uri)

    # each student goes enrolled → active → suspended → active …: every task applies a change
    plan, current = [], {}
    for n in range(count):
        student = n % students + 1
        target = "active" if current.get(student) in (None, "suspended") else "suspended"
        current[student] = target
        plan.append((str(uuid.uuid4()), student, target))

    meter = CpuMeter(
        {
            "worker": lambda: [worker.pid, *descendants(worker.pid)],
            "rabbitmq": rabbitmq_pids,
            **({} if backend == SQLITE else {"postgres": lambda: postgres_pids([PG_DATABASE])}),
            "client": lambda: [os.getpid()],
        }
    )
    meter.start()
    started = time.monotonic()
    for request_id, student, target in plan:
        celery_app.apply_status_change.apply_async((request_id, student, target, "benchmark"), producer=producer)
    enqueued = time.monotonic()
    done = _wait_committed(engine, count, worker, log_path)
    cpu = meter.stop()
    states = _states(engine)
    stop_process(worker)

    rate = count / (done - started)
    notes = f"enqueue alone {count / (enqueued - started):,.0f}/s; states {states}; {format_cpu(cpu, rate)}"
    return [Row("b", "celery task per update", backend, CONCURRENCY, rate, count, notes=notes)]


def _wait_committed(engine, count: int, worker, log_path, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    query = select(func.count()).select_from(celery_app.BenchStatusRequest)
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.scalar(query) >= count:
                return time.monotonic()
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited ({worker.returncode}); see {log_path}")
        time.sleep(POLL)
    raise RuntimeError(f"celery tasks not all committed within {timeout:g}s; see {log_path}")


def _states(engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(celery_app.BenchStatusRequest.state, func.count()).group_by(celery_app.BenchStatusRequest.state)
        )
        return dict(rows.all())
