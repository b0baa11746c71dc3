"""Scenario (f), the baseline: the seed's architecture — three chained Celery tasks per course completion.

The worker of (b) (prefork, concurrency 2, ``acks_late``) with the tasks of
:mod:`benchmarks.celery_seed_tasks` added, on a vhost of its own of the same RabbitMQ and the
same database as (b) (a SQLite file, or ``mensageria_bench_celery``); the mails go over SMTP to a
real local server (:mod:`benchmarks.smtp_sink`). Each student starts ``active``; per completion
one chain — status update → PDF → mail — is enqueued the Celery way (no publisher confirms).
Completions/s from the first enqueue until the sink has received the last mail.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from datetime import UTC, datetime

from celery import chain
from sqlalchemy import func, insert, select

from benchmarks import celery_app, celery_seed_tasks
from benchmarks.celery_bench import CONCURRENCY, PG_DATABASE, celery_producer, database, start_worker
from benchmarks.core import SQLITE, Context, Row
from benchmarks.cpu import CpuMeter, format_cpu, postgres_pids, rabbitmq_pids
from benchmarks.infra import Cleanup, descendants, scoped, stop_process
from benchmarks.memory import RssMeter, format_rss
from benchmarks.report import SEED_BASELINE
from benchmarks.smtp_sink import SmtpSink
from services.infra.db import build_engine


def run(ctx: Context, backend: str) -> list[Row]:
    # this scenario's worker, sink and database go as soon as it ends
    with scoped(ctx.cleanup, f"celery seed {backend}") as cleanup:
        return _run(ctx, backend, cleanup)


def _run(ctx: Context, backend: str, cleanup: Cleanup) -> list[Row]:
    count = ctx.sizes.completions
    amqp_uri = ctx.broker.create_vhost(cleanup, "celery_seed")
    db_uri = database(ctx, backend, cleanup, name="celery_seed")
    engine = build_engine(db_uri)
    cleanup.push("dispose celery engine", engine.dispose)
    tag = secrets.token_hex(4)
    students = [(n, f"Graduate {n}", f"g{n}-{tag}@example.org") for n in range(1, count + 1)]
    celery_app.Base.metadata.create_all(engine)  # (b)'s tables and bench_certificates
    with engine.begin() as connection:
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [{"student_id": n, "status": "active", "version": 1, "updated_at": now} for n, _, _ in students]
        connection.execute(insert(celery_app.BenchStudentStatus), rows)

    sink = SmtpSink.start(cleanup, ctx.workdir / f"smtp-celery-{backend}")
    producer = celery_producer(amqp_uri, cleanup)
    env = {"BENCH_SMTP_PORT": str(sink.port)}
    worker, log_path = start_worker(
        ctx, cleanup, f"celery-seed-{backend}", amqp_uri, db_uri, env, celery_seed_tasks.__name__
    )
    groups = {
        "worker": lambda: [worker.pid, *descendants(worker.pid)],
        "rabbitmq": rabbitmq_pids,
        **({} if backend == SQLITE else {"postgres": lambda: postgres_pids([PG_DATABASE])}),
        "client": lambda: [os.getpid(), sink.pid],  # the SMTP sink counts as the client's
    }
    meter, rss = CpuMeter(groups), RssMeter(groups)
    rss.start()
    meter.start()
    started = time.monotonic()
    for n, name, email in students:
        code = uuid.uuid4().hex
        chain(
            celery_app.apply_status_change.si(str(uuid.uuid4()), n, "completed", "course completed"),
            celery_seed_tasks.render_certificate.si(code, n, name, email, "Bench"),
            celery_seed_tasks.mail_certificate.si(code),
        ).apply_async(producer=producer)
    enqueued = time.monotonic()
    last_mail = sink.wait_for(tag, count, lambda: _alive(worker, log_path))
    cpu, peaks = meter.stop(), rss.stop()
    received = sink.received(tag)
    with engine.connect() as connection:
        completed = connection.scalar(
            select(func.count())
            .select_from(celery_app.BenchStudentStatus)
            .where(celery_app.BenchStudentStatus.status == "completed")
        )
        certificates = connection.scalar(select(func.count()).select_from(celery_seed_tasks.BenchCertificate))
    stop_process(worker)
    if (completed, certificates, received.with_pdf) != (count, count, count):
        raise RuntimeError(
            f"{count} completions: {completed} completed, {certificates} certificates, "
            f"{received.with_pdf} mails with a PDF; see {log_path}"
        )
    rate = count / (last_mail - started)
    notes = (
        f"{count:,} chains (status → PDF → mail) enqueued at {count / (enqueued - started):,.0f}/s; "
        f"{received.mails:,} mails received, {received.bytes / received.mails / 1024:.0f} KiB each; "
        f"{format_cpu(cpu, rate)}; {format_rss(peaks)}"
    )
    scenario = f"{SEED_BASELINE}: three chained tasks per completion"
    return [Row("f", scenario, backend, CONCURRENCY, rate, count, notes=notes)]


def _alive(worker, log_path) -> None:
    if worker.poll() is not None:
        raise RuntimeError(f"celery worker exited ({worker.returncode}); see {log_path}")
