"""The background loop that sends pending mails, retrying failures with
exponential backoff (``mail_retry_base_delay`` x 2^n, ``mail_max_attempts`` in all)::

    class NotificationsService:
        db = Database(NotificationsBase)
        sender = MailSender()

        @reliable_event_handler("status", "student_status_changed")
        def handle_student_status_changed(self, payload):
            ...  # record a pending notification, then
            self.sender.wake()
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import eventlet
from prometheus_client.core import Metric

from services._notifications import gauges, repo
from services._notifications.mail import Outgoing
from services._notifications.transport import Transport, compose, describe_error, error_kind, transport_for
from services.infra import metrics, tracing
from services.infra.background import BackgroundLoop
from services.infra.correlation import working_on
from services.infra.models import utcnow
from services.infra.settings import Settings

log = logging.getLogger(__name__)

BATCH_SIZE = 10


def retry_schedule(settings: Settings) -> list[float]:
    """The waits between attempts: one fewer than ``mail_max_attempts``."""
    return [repo.retry_delay(settings.mail_retry_base_delay, n) for n in range(1, settings.mail_max_attempts)]


class MailSender(BackgroundLoop):
    """Sends due notifications; workers ``wake()`` it after recording one.

    Each round claims a batch in a short transaction (pushing its ``next_attempt_at``
    out by a lease, so another instance leaves it alone) and sends it outside any
    transaction over ``SMTP_CONNECTIONS`` connections at once (kept while full batches
    follow), ``batch_size`` mails a connection. A recipient's mails of a batch all go over
    one connection, in the order they were recorded, and a round ends when every
    connection has sent its share, so nobody gets their mails out of order. A failure is
    recorded at once, the batch's sent mails together after it. A process killed mid-batch
    resends the mails it had not recorded when the lease runs out, with the same
    ``Message-ID``.
    """

    def __init__(self, db_attr: str = "db", batch_size: int = BATCH_SIZE):
        self.db_attr = db_attr
        self.batch_size = batch_size

    def setup(self) -> None:
        super().setup()
        self.settings = Settings.from_config(self.container.config)
        # one connection each; writing files needs no more than one
        lanes = self.settings.smtp_connections if self.settings.smtp_host else 1
        self.transports = [transport_for(self.settings) for _ in range(lanes)]
        # a mail in hand cannot take longer than a few SMTP timeouts
        self.lease = timedelta(seconds=30 + 3 * self.settings.smtp_timeout * self.batch_size)
        # short retry delays (tests, impatient set-ups) are honoured, not rounded up to a second
        self.poll_interval = max(min(1.0, self.settings.mail_retry_base_delay), 0.05)

    def start(self) -> None:
        self.Session = self.sibling(self.db_attr).Session
        log.info(
            "notifications: mail goes to %s (%d connection(s) at once)",
            self.transports[0].describe(),
            len(self.transports),
        )
        super().start()

    def get_dependency(self, worker_ctx: Any) -> MailSender:
        return self

    def _span_attributes(self, mail: Outgoing) -> dict | None:
        """What a ``send mail`` span says (traces on): the mail's kind and attempt, the SMTP server."""
        if not tracing.enabled():
            return None
        attributes = {
            "mensageria.notification.id": mail.id,
            "mensageria.mail.kind": mail.kind,
            "mensageria.mail.attempt": mail.attempts + 1,
            "mensageria.mail.transport": "smtp" if self.settings.smtp_host else "file",
        }
        if self.settings.smtp_host:
            attributes.update({"server.address": self.settings.smtp_host, "server.port": self.settings.smtp_port})
        return attributes

    def collect_metrics(self) -> list[Metric]:
        """Mails pending and failed, and the age of the oldest pending one, for ``/metrics``."""
        return gauges.read(self.Session)

    def step(self) -> bool:
        claim = self.batch_size * len(self.transports)
        try:
            with self.Session.begin() as session:
                batch = repo.claim_due(session, utcnow(), claim, self.lease)
        except Exception:  # the loop backs off: no SMTP connection is left open meanwhile
            self._close()
            raise
        sent: list[Outgoing] = []
        unsent: list[Outgoing] = []
        full = len(batch) == claim
        lanes, deferred = _lanes(batch, len(self.transports), self.batch_size)
        try:
            work = [(transport, lane) for transport, lane in zip(self.transports, lanes, strict=True) if lane]
            if len(work) == 1:  # no greenthread for one connection's worth
                self._send_lane(*work[0], sent, unsent)
            elif work:
                _all_of([eventlet.spawn(self._send_lane, transport, lane, sent, unsent) for transport, lane in work])
        finally:
            if not full or unsent or not self.running:
                self._close()  # kept open while full batches follow each other
            if sent or unsent or deferred:
                self._record(sent, unsent + deferred)
        return (full or bool(deferred)) and not unsent

    def _send_lane(self, transport: Transport, lane: list[Outgoing], sent: list, unsent: list) -> None:
        """One connection's share of a batch, in order: the mails the server took go to ``sent``,
        those left when the service stops to ``unsent``."""
        for index, mail in enumerate(lane):
            if not self.running:  # stopping: leave the rest for the next process
                unsent.extend(lane[index:])
                return
            with working_on(mail.correlation_id, f"mail {mail.kind}"):  # its log lines carry its id
                if self.send(mail, transport):
                    sent.append(mail)

    def _close(self) -> None:
        for transport in self.transports:
            transport.close()

    def _record(self, sent: list[Outgoing], unsent: list[Outgoing]) -> None:
        """The batch's sent mails marked sent and the unsent ones given back, in one transaction: one
        commit per batch, not per mail. A process killed between a send and this commit sends those
        mails again when their lease runs out, with the same ``Message-ID``."""
        with self.Session.begin() as session:
            repo.mark_sent(session, [mail.id for mail in sent], utcnow())
            repo.release(session, unsent, utcnow())
        for mail in sent:
            metrics.MAIL_ATTEMPTS.labels("sent").inc()
            with working_on(mail.correlation_id, f"mail {mail.kind}"):
                log.info("notification %d sent to %s", mail.id, mail.recipient)

    def send(self, mail: Outgoing, transport: Transport) -> bool:
        """Send ``mail`` over ``transport``; True if the server took it. A failure is recorded at
        once (retried later)."""
        try:
            with tracing.span("send mail", tracing.CLIENT, mail.traceparent, self._span_attributes(mail)):
                transport.send(compose(mail, self.settings.mail_from))
        except Exception as exc:  # any failure is a failed attempt, retried later
            error = describe_error(exc)
            metrics.SMTP_ERRORS.labels(error_kind(exc)).inc()
            with self.Session.begin() as session:
                state = repo.mark_failed(
                    session,
                    mail.id,
                    error,
                    utcnow(),
                    self.settings.mail_max_attempts,
                    self.settings.mail_retry_base_delay,
                )
            metrics.MAIL_ATTEMPTS.labels("failed" if state == repo.FAILED else "retried").inc()
            if state == repo.FAILED:
                log.error("notification %d to %s failed for good: %s", mail.id, mail.recipient, error)
            else:
                log.warning("notification %d to %s not sent (%s); will retry", mail.id, mail.recipient, error)
            return False
        return True


def _lanes(batch: list[Outgoing], count: int, size: int) -> tuple[list[list[Outgoing]], list[Outgoing]]:
    """``batch`` shared among ``count`` connections, at most ``size`` mails each (the lease is
    reckoned for that many): each recipient's mails on one connection, in their order, a new
    recipient on the connection with the fewest. A mail that would overflow its connection is
    deferred, and so are the recipient's later ones: given back with their place in the queue,
    and sent in the next round."""
    lanes: list[list[Outgoing]] = [[] for _ in range(count)]
    lane_of: dict[str, int] = {}
    deferred: list[Outgoing] = []
    overflowed: set[str] = set()
    for mail in batch:
        recipient = mail.recipient.lower()
        if recipient not in lane_of:
            lane_of[recipient] = min(range(count), key=lambda i: len(lanes[i]))
        lane = lanes[lane_of[recipient]]
        if recipient in overflowed or len(lane) >= size:
            overflowed.add(recipient)
            deferred.append(mail)
        else:
            lane.append(mail)
    return lanes, deferred


def _all_of(threads: list) -> None:
    """Wait for every greenthread; the first error is raised once all have ended. Interrupted
    (the loop killed), the rest are killed too: no mail is sent after its sender is gone."""
    error: BaseException | None = None
    try:
        for thread in threads:
            try:
                thread.wait()
            except Exception as exc:  # the others still finish their share
                error = error or exc
    except BaseException:
        for thread in threads:
            thread.kill()
        raise
    if error is not None:
        raise error
