"""The status service's gauges, read from its database when Prometheus scrapes (at most once a
second, see :class:`services.infra.metrics.ScrapeTimeGauges`): the applier's backlog and the bulk
jobs running. Each is one cheap query on an index: the pending requests' partial index, the jobs
table, and ``(job_id, state)`` for the running jobs' rows."""

from __future__ import annotations

from prometheus_client.core import Metric
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from services._status.batches import released
from services._status.models import StatusJob, StatusJobError, StatusRequest
from services._status.repo import APPLIED, FAILED, PENDING, REJECTED
from services.infra import metrics
from services.infra.models import utcnow


def read(session_factory: sessionmaker) -> list[Metric]:
    with session_factory() as session:
        return [*backlog(session), *running_jobs(session)]


def backlog(session: Session) -> list[Metric]:
    """Pending requests the applier may take (not the rows of an upload still going on), and
    the age of the oldest (by arrival)."""
    waiting = (StatusRequest.state == PENDING, released())
    pending = session.scalar(select(func.count()).select_from(StatusRequest).where(*waiting))
    oldest = session.scalar(select(StatusRequest.created_at).where(*waiting).order_by(StatusRequest.seq).limit(1))
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    return [metrics.STATUS_PENDING.family(pending or 0), metrics.STATUS_OLDEST_AGE.family(max(age, 0.0))]


def running_jobs(session: Session) -> list[Metric]:
    """Jobs sealed with rows still pending: how many, their rows by state, and their rows/s
    (each job's settled rows over its age, as ``get_job`` reports it, summed)."""
    jobs = dict(
        session.execute(
            select(StatusJob.id, StatusJob.created_at).where(
                StatusJob.sealed_at.is_not(None),
                exists().where(StatusRequest.job_id == StatusJob.id, StatusRequest.state == PENDING),
            )
        ).all()
    )
    rows = dict.fromkeys((PENDING, APPLIED, REJECTED, FAILED), 0)
    settled = dict.fromkeys(jobs, 0)
    if jobs:
        for job_id, state, count in session.execute(
            select(StatusRequest.job_id, StatusRequest.state, func.count())
            .where(StatusRequest.job_id.in_(jobs))
            .group_by(StatusRequest.job_id, StatusRequest.state)
        ):
            rows[state] = rows.get(state, 0) + count
            settled[job_id] += 0 if state == PENDING else count
        for job_id, count in session.execute(
            select(StatusJobError.job_id, func.count())
            .where(StatusJobError.job_id.in_(jobs))
            .group_by(StatusJobError.job_id)
        ):
            rows[REJECTED] += count  # refused before they became requests: rejected, as get_job counts them
            settled[job_id] += count
    now = utcnow()
    rate = sum(done / age for job_id, done in settled.items() if (age := (now - jobs[job_id]).total_seconds()) > 0)
    return [
        metrics.JOBS_RUNNING.family(len(jobs)),
        metrics.JOB_ROWS.family({(state,): count for state, count in rows.items()}),
        metrics.JOB_ROWS_PER_SECOND.family(rate),
    ]
