"""Mail for the notifications service: rendering, MIME messages, transports and
the sender loop.

A handler renders a mail (:func:`status_changed_mail`, :func:`certificate_issued_mail`)
and records it as a pending notification; :class:`MailSender`, a background loop,
sends what is due over SMTP — or, with no ``SMTP_HOST``, writes ``.eml`` files to
``MAIL_DIR`` — and retries failures with exponential backoff::

    class NotificationsService:
        db = Database(NotificationsBase)
        sender = MailSender()

        @reliable_event_handler("status", "student_status_changed")
        def handle_student_status_changed(self, payload):
            ...  # record a pending notification, then
            self.sender.wake()
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import mimetypes
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services._notifications import repo as repo
from services.infra.background import BackgroundLoop
from services.infra.models import utcnow

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATUS_CHANGED = "student_status_changed"
CERTIFICATE_ISSUED = "certificate_issued"

DEFAULT_MAIL_FROM = "mensageria <no-reply@mensageria.local>"
BATCH_SIZE = 10
MAX_ERROR_LENGTH = 1000

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable is a bug, not an empty line in a mail
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


# --- settings ---------------------------------------------------------------


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


@dataclass(frozen=True)
class MailSettings:
    """The ``SMTP_*`` and ``MAIL_*`` values of ``config.yaml``, typed."""

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = 10.0
    mail_from: str = DEFAULT_MAIL_FROM
    mail_dir: str = "./mail"
    max_attempts: int = 6
    retry_base_delay: float = 2.0

    @classmethod
    def from_config(cls, config: dict) -> MailSettings:
        default = cls()
        return cls(
            smtp_host=_text(config.get("SMTP_HOST")),
            smtp_port=int(config.get("SMTP_PORT") or default.smtp_port),
            smtp_starttls=_flag(config.get("SMTP_STARTTLS", False)),
            smtp_username=_text(config.get("SMTP_USERNAME")),
            smtp_password="" if config.get("SMTP_PASSWORD") is None else str(config["SMTP_PASSWORD"]),
            smtp_timeout=float(config.get("SMTP_TIMEOUT") or default.smtp_timeout),
            mail_from=_text(config.get("MAIL_FROM")) or default.mail_from,
            mail_dir=_text(config.get("MAIL_DIR")) or default.mail_dir,
            max_attempts=max(int(config.get("MAIL_MAX_ATTEMPTS") or default.max_attempts), 1),
            retry_base_delay=float(config.get("MAIL_RETRY_BASE_DELAY", default.retry_base_delay)),
        )


def retry_schedule(settings: MailSettings) -> list[float]:
    """The waits between attempts: one fewer than ``max_attempts``."""
    return [repo.retry_delay(settings.retry_base_delay, n) for n in range(1, settings.max_attempts)]


# --- rendering --------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """A rendered mail, as a notification records it."""

    kind: str
    dedup_key: str
    student_id: int | None
    recipient: str
    subject: str
    body_text: str
    body_html: str
    message_id: str
    attachment_name: str | None = None
    attachment: bytes | None = None


def render(kind: str, **context: Any) -> tuple[str, str, str]:
    """``(subject, text, html)`` from ``templates/<kind>.subject.txt``, ``.txt`` and ``.html``."""
    subject = _templates.get_template(f"{kind}.subject.txt").render(context)
    text = _templates.get_template(f"{kind}.txt").render(context)
    html = _templates.get_template(f"{kind}.html").render(context)
    return " ".join(subject.split()), text, html  # a header is one line


def message_id(dedup_key: str, mail_from: str) -> str:
    """The same ``Message-ID`` for every attempt (and any resend) of one mail."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "mensageria.local"
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
    return f"<notification.{digest}@{domain}>"


def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else None


def status_changed_key(change: dict, recipient: str) -> str:
    event = change.get("request_id") or f"{change['student_id']}:v{change['version']}"
    return f"{STATUS_CHANGED}:{event}:{recipient}"


def certificate_issued_key(issued: dict) -> str:
    return f"{CERTIFICATE_ISSUED}:{issued['code']}:{issued['student_email']}"


def attachment(document: dict) -> dict | None:
    """``get_certificate_pdf``'s answer as ``{"filename", "data": bytes}``; None if unreadable."""
    try:
        return {"filename": str(document["filename"]), "data": base64.b64decode(document["data"], validate=True)}
    except (KeyError, TypeError, binascii.Error):
        return None


def status_changed_mail(change: dict, student: dict, mail_from: str) -> Mail:
    """The mail for one ``student_status_changed`` event, to the student."""
    recipient = student["email"]
    dedup_key = status_changed_key(change, recipient)
    subject, text, html = render(
        STATUS_CHANGED,
        name=student["name"],
        course=change.get("course") or student["course"],
        from_status=change.get("from_status"),
        to_status=change["to_status"],
        reason=change.get("reason"),
        occurred_at=_when(change.get("occurred_at")),
    )
    return Mail(
        kind=STATUS_CHANGED,
        dedup_key=dedup_key,
        student_id=change["student_id"],
        recipient=recipient,
        subject=subject,
        body_text=text,
        body_html=html,
        message_id=message_id(dedup_key, mail_from),
    )


def certificate_issued_mail(issued: dict, document: dict | None, mail_from: str) -> Mail:
    """The mail for one ``certificate_issued`` event; ``document`` is the PDF, if any."""
    dedup_key = certificate_issued_key(issued)
    subject, text, html = render(
        CERTIFICATE_ISSUED,
        name=issued["student_name"],
        course=issued["course"],
        code=issued["code"],
        issued_at=_when(issued.get("issued_at")),
        verification_url=issued["verification_url"],
        pdf_url=issued.get("pdf_url"),
        has_attachment=document is not None,
    )
    return Mail(
        kind=CERTIFICATE_ISSUED,
        dedup_key=dedup_key,
        student_id=issued.get("student_id"),
        recipient=issued["student_email"],
        subject=subject,
        body_text=text,
        body_html=html,
        message_id=message_id(dedup_key, mail_from),
        attachment_name=document["filename"] if document else None,
        attachment=document["data"] if document else None,
    )


# --- MIME -------------------------------------------------------------------


def build_message(mail: repo.Outgoing, mail_from: str) -> EmailMessage:
    """Text with an HTML alternative, plus the attachment if there is one."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = Address(addr_spec=mail.recipient)
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.created_at)
    message["Message-ID"] = mail.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    # quoted-printable keeps the message 7-bit, whatever the server supports
    message.set_content(mail.body_text, cte="quoted-printable")
    message.add_alternative(mail.body_html, subtype="html", cte="quoted-printable")
    if mail.attachment is not None:
        content_type = mimetypes.guess_type(mail.attachment_name or "")[0] or "application/octet-stream"
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(mail.attachment, maintype=maintype, subtype=subtype, filename=mail.attachment_name)
    return message


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the notification log."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        text = f"{type(exc).__name__}: {exc.smtp_code} {reply}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(
            f"{address} ({code} {reply.decode(errors='replace')})" for address, (code, reply) in exc.recipients.items()
        )
        text = f"{type(exc).__name__}: {refused}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:MAX_ERROR_LENGTH]


# --- transports -------------------------------------------------------------


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None: ...

    def close(self) -> None: ...


class SmtpTransport:
    """smtplib (green under eventlet), one connection reused for a batch."""

    def __init__(self, settings: MailSettings):
        self.settings = settings
        self.connection: smtplib.SMTP | None = None

    def describe(self) -> str:
        s = self.settings
        return f"SMTP {s.smtp_host}:{s.smtp_port}" + (" (STARTTLS)" if s.smtp_starttls else "")

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        connection = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
        try:
            connection.ehlo()
            if s.smtp_starttls:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if s.smtp_username:
                connection.login(s.smtp_username, s.smtp_password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, message: EmailMessage) -> None:
        if self.connection is None:
            self.connection = self._connect()
        try:
            self.connection.send_message(message)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
            # the server refused this mail but still talks: reset the session for the next one
            try:
                self.connection.rset()
            except OSError:  # smtplib's errors are OSErrors too
                self._drop()
            raise
        except BaseException:
            self._drop()  # the connection is in an unknown state: the next send reconnects
            raise

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError):  # smtplib's errors are OSErrors too
                self.connection.quit()
            self._drop()

    def _drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class DirectoryTransport:
    """Writes each mail as ``<date>-<message id>.eml``: the system runs without a mail server.

    The name is stable per notification, so writing one mail twice leaves one file.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"files in {self.directory.resolve()}"

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        when = parsedate_to_datetime(message["Date"]).strftime("%Y%m%dT%H%M%SZ")
        local = message["Message-ID"].strip("<>").partition("@")[0]
        path = self.directory / f"{when}-{local}.eml"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(message.as_bytes())
        os.replace(partial, path)  # readers never see half a mail

    def close(self) -> None:
        pass


def transport_from_config(settings: MailSettings) -> SmtpTransport | DirectoryTransport:
    if settings.smtp_host:
        return SmtpTransport(settings)
    return DirectoryTransport(settings.mail_dir)


# --- the sender -------------------------------------------------------------


class MailSender(BackgroundLoop):
    """Sends due notifications; workers ``wake()`` it after recording one.

    Each round claims a batch in a short transaction (pushing its ``next_attempt_at``
    out by a lease, so another instance leaves it alone), sends outside any
    transaction, and records each outcome in a short transaction of its own.
    A process killed mid-send resends that mail when the lease runs out, with the
    same ``Message-ID``.
    """

    def __init__(self, db_attr: str = "db", batch_size: int = BATCH_SIZE):
        self.db_attr = db_attr
        self.batch_size = batch_size

    def start(self) -> None:
        self.settings = MailSettings.from_config(self.container.config)
        self.Session = self.sibling(self.db_attr).Session
        self.transport = transport_from_config(self.settings)
        # a mail in hand cannot take longer than a few SMTP timeouts
        self.lease = timedelta(seconds=30 + 3 * self.settings.smtp_timeout * self.batch_size)
        # short retry delays (tests, impatient set-ups) are honoured, not rounded up to a second
        self.poll_interval = max(min(1.0, self.settings.retry_base_delay), 0.05)
        log.info("notifications: mail goes to %s", self.transport.describe())
        super().start()

    def get_dependency(self, worker_ctx: Any) -> MailSender:
        return self

    def step(self) -> bool:
        with self.Session.begin() as session:
            batch = repo.claim_due(session, utcnow(), self.batch_size, self.lease)
        try:
            for index, mail in enumerate(batch):
                if not self.running:  # stopping: leave the rest for the next process
                    with self.Session.begin() as session:
                        repo.release(session, [m.id for m in batch[index:]], utcnow())
                    return False
                self.send(mail)
        finally:
            self.transport.close()
        return len(batch) == self.batch_size

    def send(self, mail: repo.Outgoing) -> None:
        try:
            self.transport.send(build_message(mail, self.settings.mail_from))
        except Exception as exc:  # any failure is a failed attempt, retried later
            error = describe_error(exc)
            with self.Session.begin() as session:
                state = repo.mark_failed(
                    session, mail.id, error, utcnow(), self.settings.max_attempts, self.settings.retry_base_delay
                )
            if state == repo.FAILED:
                log.error("notification %d to %s failed for good: %s", mail.id, mail.recipient, error)
            else:
                log.warning("notification %d to %s not sent (%s); will retry", mail.id, mail.recipient, error)
            return
        with self.Session.begin() as session:
            repo.mark_sent(session, mail.id, utcnow())
        log.info("notification %d sent to %s", mail.id, mail.recipient)
