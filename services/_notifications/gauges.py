"""The notifications service's gauges, read from the mail log when Prometheus scrapes (at most
once a second, see :class:`services.infra.metrics.ScrapeTimeGauges`): mails pending and failed,
counted on the ``state`` index, and the age of the oldest pending one. Sent mails are counted as
they go (``mensageria_mail_send_attempts_total{outcome="sent"}``), not here: the log only grows."""

from __future__ import annotations

from prometheus_client.core import Metric
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services._notifications.models import Notification
from services._notifications.repo import FAILED, PENDING
from services.infra import metrics
from services.infra.models import utcnow


def read(session_factory: sessionmaker) -> list[Metric]:
    state = mail_state(session_factory)
    return [
        metrics.MAIL_NOTIFICATIONS.family({(name,): state[name] for name in (PENDING, FAILED)}),
        metrics.MAIL_OLDEST_AGE.family(state["oldest_pending_age"]),
    ]


def mail_state(session_factory: sessionmaker) -> dict:
    """``{pending, failed, oldest_pending_age}``: for ``/metrics`` and the operations console."""
    with session_factory() as session:
        counts = dict(
            session.execute(
                select(Notification.state, func.count())
                .where(Notification.state.in_((PENDING, FAILED)))
                .group_by(Notification.state)
            ).all()
        )
        oldest = session.scalar(select(func.min(Notification.created_at)).where(Notification.state == PENDING))
        total = session.scalar(select(func.max(Notification.id))) or 0  # mails recorded so far (ids only grow)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    return {
        PENDING: counts.get(PENDING, 0),
        FAILED: counts.get(FAILED, 0),
        "oldest_pending_age": max(age, 0.0),
        "mails_total": total,
    }
