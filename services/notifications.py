"""notifications: e-mails students about their status and their certificates.

Handles: status.student_status_changed (every change), certificates.certificate_issued
(with the verification link, the PDF and the signed credential attached). A mail is in the
student's language (the certificate's, for a certificate), or else in DEFAULT_LANGUAGE.
RPC: list_notifications, get_notification, resend_notification, ping, and the
dead-letter methods.

A handler renders the mail and records it as pending (one per event and
recipient, however often the event is delivered); the sender loop sends it,
retrying with backoff, so a mail outage delays only mail.
"""

from __future__ import annotations

import logging

from services import i18n
from services._notifications import gauges, mail, repo
from services._notifications.models import NotificationsBase
from services._notifications.sender import MailSender
from services.exceptions import CertificateNotFound
from services.infra import dead_letters, tracing
from services.infra.batching import EVENTS_A_BATCH, Delivery, batched_event_handler
from services.infra.correlation import Correlation
from services.infra.db import Database
from services.infra.heap import LeanHeap
from services.infra.inbound import rpc
from services.infra.logs import LogContext
from services.infra.metrics import Metrics
from services.infra.models import utcnow
from services.infra.retry import reliable_event_handler
from services.infra.rpc import TimedRpcProxy
from services.infra.settings import SettingsProvider
from services.infra.tracing import Tracing
from services.schemas import CertificateIssuedSchema, load, positive_id, status_changes

log = logging.getLogger(__name__)

CHANGES_A_ROUND = 2_000  # changes looked up and recorded together (get_students takes up to 10,000 ids)

summary_schema = repo.NotificationSchema()
detail_schema = repo.NotificationDetailSchema()


class NotificationsService(dead_letters.DeadLetterRpc):  # the mixin named via its module: see students.py
    name = "notifications"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    heap = LeanHeap()  # less for the garbage collector: start-up heap frozen, no cycle per worker
    db = Database(NotificationsBase, session_options={"expire_on_commit": False})
    sender = MailSender()
    students = TimedRpcProxy("students")
    certificates = TimedRpcProxy("certificates")
    settings = SettingsProvider()

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @batched_event_handler("status", "student_status_changed", batch_size=EVENTS_A_BATCH)
    def handle_student_status_changed(self, deliveries: list[Delivery]) -> None:
        """The changes of every message waiting, up to ``EVENTS_A_BATCH`` of them: their students
        looked up and their mails recorded together, ``CHANGES_A_ROUND`` changes at a time (a
        message redelivered, or a batch handled again one by one, records no mail twice)."""
        changes = [c for d in deliveries for c in d.stamped(status_changes(d.payload))]  # invalid: parked
        with tracing.adopted(changes, "handle status.student_status_changed"):  # each change in its own trace
            for start in range(0, len(changes), CHANGES_A_ROUND):
                self._mail_changes(changes[start : start + CHANGES_A_ROUND])

    def _mail_changes(self, changes: list[dict]) -> None:
        # one lookup for them all; students deleted since have nobody to notify
        students = {s["id"]: s for s in self.students.get_students(sorted({c["student_id"] for c in changes}))}
        mails = [
            mail.status_changed_mail(change, student, self.settings.mail_from, self._language(student))
            for change in changes
            if (student := students.get(change["student_id"])) is not None
        ]
        if repo.record_many(self.db, mails):
            self.sender.wake()

    @reliable_event_handler("certificates", "certificate_issued")
    def handle_certificate_issued(self, payload: dict) -> None:
        issued = load(CertificateIssuedSchema(), payload)
        with self.db() as session:
            if repo.exists(session, mail.certificate_issued_key(issued)):  # redelivered: no second PDF fetch
                return
        files = self._certificate_files(issued["code"])
        if len(files) < 2:
            log.warning("not every file of certificate %s could be had; mailing its links", issued["code"])
        issued_mail = mail.certificate_issued_mail(issued, files, self.settings.mail_from, self._language(issued))
        if repo.record(self.db, issued_mail):
            self.sender.wake()

    def _certificate_files(self, code: str) -> list[mail.Attachment]:
        """The certificate's PDF and its signed credential, those that can be had."""
        try:
            files = self.certificates.get_certificate_files(code)
        except CertificateNotFound:  # deleted since: the mail still says where it was
            return []
        if not isinstance(files, dict):
            return []
        attached = [mail.attachment(files.get("pdf")), mail.credential_attachment(files.get("credential"))]
        return [file for file in attached if file is not None]

    def _language(self, subject: dict) -> str:
        """The language of a mail about ``subject`` (a student, an issued certificate): its own, or the default."""
        return i18n.normalize(subject.get("language")) or self.settings.default_language

    @rpc
    def get_overview(self) -> dict:
        """Mails pending and failed, and the age of the oldest pending one, for the console."""
        return gauges.mail_state(self.db)

    @rpc
    def list_notifications(self, student_id=None, state=None, limit=50, cursor=None) -> dict:
        query = load(
            repo.ListNotificationsSchema(), {"student_id": student_id, "state": state, "limit": limit, "cursor": cursor}
        )
        with self.db() as session:
            items, next_cursor = repo.list_page(session, **query)
            return {"items": summary_schema.dump(items, many=True), "next_cursor": next_cursor}

    @rpc
    def get_notification(self, notification_id: int) -> dict:
        with self.db() as session:
            return detail_schema.dump(repo.get(session, positive_id(notification_id, "notification_id")))

    @rpc
    def resend_notification(self, notification_id: int) -> dict:
        with self.db.begin() as session:
            notification, changed = repo.resend(session, positive_id(notification_id, "notification_id"), utcnow())
            result = summary_schema.dump(notification)
        if changed:
            self.sender.wake()
        return result
