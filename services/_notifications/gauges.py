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
    with session_factory() as session:
        counts = dict(
            session.execute(
                select(Notification.state, func.count())
                .where(Notification.state.in_((PENDING, FAILED)))
                .group_by(Notification.state)
            ).all()
        )
        oldest = session.scalar(select(func.min(Notification.created_at)).where(Notification.state == PENDING))
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    return [
        metrics.MAIL_NOTIFICATIONS.family({(state,): counts.get(state, 0) for state in (PENDING, FAILED)}),
        metrics.MAIL_OLDEST_AGE.family(max(age, 0.0)),
    ]
