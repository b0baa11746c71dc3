"""The status service's gauges, read from its database when Prometheus scrapes (at most once a
second, see :class:`services.infra.metrics.ScrapeTimeGauges`): the applier's backlog and the bulk
jobs running. Each is a cheap query on an index: the queue of pending requests (``status_pending``),
the jobs table, and for each running job its rows as ``get_job`` counts them."""

from __future__ import annotations

from prometheus_client.core import Metric
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from services._status import jobs_repo
from services._status.batches import waiting
from services._status.models import StatusJob, StatusPending
from services._status.repo import APPLIED, FAILED, PENDING, REJECTED
from services.infra import metrics
from services.infra.models import utcnow


def read(session_factory: sessionmaker) -> list[Metric]:
    with session_factory() as session:
        return [*backlog(session), *running_jobs(session)]


def backlog(session: Session) -> list[Metric]:
    """Pending requests the applier may take (not the rows of an upload still going on), and
    the age of the oldest (by arrival)."""
    pending, oldest = waiting(session)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    return [metrics.STATUS_PENDING.family(pending or 0), metrics.STATUS_OLDEST_AGE.family(max(age, 0.0))]


def running_jobs(session: Session) -> list[Metric]:
    """Jobs sealed with rows still pending: how many, their rows by state, and their rows/s
    (each job's settled rows over its age, as ``get_job`` reports it, summed)."""
    jobs = session.scalars(
        select(StatusJob).where(StatusJob.sealed_at.is_not(None), exists().where(StatusPending.job_id == StatusJob.id))
    ).all()
    rows = dict.fromkeys((PENDING, APPLIED, REJECTED, FAILED), 0)
    now, rate = utcnow(), 0.0
    for job in jobs:
        counts, _ = jobs_repo.row_counts(session, job)
        for state, count in counts.items():
            rows[state] += count
        if (age := (now - job.created_at).total_seconds()) > 0:
            rate += (counts[APPLIED] + counts[REJECTED] + counts[FAILED]) / age
    return [
        metrics.JOBS_RUNNING.family(len(jobs)),
        metrics.JOB_ROWS.family({(state,): count for state, count in rows.items()}),
        metrics.JOB_ROWS_PER_SECOND.family(rate),
    ]
