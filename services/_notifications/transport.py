"""Delivery: a recorded mail as an ``EmailMessage``, sent over SMTP or, with no
``smtp_host``, written as an ``.eml`` file to ``mail_dir``::

    transport = transport_for(settings)
    try:
        transport.send(build_message(outgoing, settings.mail_from))
    except Exception as exc:
        reason = describe_error(exc)
    finally:
        transport.close()
"""

from __future__ import annotations

import contextlib
import errno
import os
import smtplib
import socket
import ssl
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Protocol

from services._notifications.mail import Outgoing
from services.infra.settings import Settings

MAX_ERROR_LENGTH = 1000


def build_message(mail: Outgoing, mail_from: str) -> EmailMessage:
    """Text with an HTML alternative, plus its attachments, in order."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = Address(addr_spec=mail.recipient)
    _set_subject(message, mail.subject)
    message["Date"] = format_datetime(mail.created_at)
    message["Message-ID"] = mail.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    if mail.correlation_id:  # the request the mail is about, from its X-Request-Id on
        message["X-Correlation-ID"] = mail.correlation_id
    # quoted-printable keeps the message 7-bit, whatever the server supports
    message.set_content(mail.body_text, cte="quoted-printable")
    message.add_alternative(mail.body_html, subtype="html", cte="quoted-printable")
    for attachment in mail.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return message


def _set_subject(message: EmailMessage, subject: str) -> None:
    """Before Python 3.13, the default policy folds a long non-ASCII header between two encoded
    words and loses the space there ("do curso Física" reads "do cursoFísica"); the legacy
    ``Header`` class keeps it inside an encoded word, and a header set raw is not folded again."""
    if subject.isascii():
        message["Subject"] = subject
    else:
        message.set_raw("Subject", Header(subject, "utf-8", header_name="Subject").encode())


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


_SMTP_KINDS: tuple[tuple[type[BaseException], str], ...] = (  # the first matching class decides
    (smtplib.SMTPAuthenticationError, "auth"),
    (smtplib.SMTPSenderRefused, "sender_refused"),
    (smtplib.SMTPRecipientsRefused, "recipient_refused"),
    (smtplib.SMTPDataError, "data_refused"),
    (smtplib.SMTPConnectError, "connection"),
    (smtplib.SMTPServerDisconnected, "connection"),
    (smtplib.SMTPNotSupportedError, "tls"),  # e.g. no STARTTLS offered
    (smtplib.SMTPException, "smtp"),
    (TimeoutError, "timeout"),
    (ssl.SSLError, "tls"),
    (ConnectionError, "connection"),
    (socket.gaierror, "connection"),  # the host name does not resolve
)


def error_kind(exc: BaseException) -> str:
    """A failed send's kind, one of a few words (a metric's label): auth, sender_refused,
    recipient_refused, data_refused, connection, tls, smtp, timeout or other."""
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "connection"
    return next((kind for kinds, kind in _SMTP_KINDS if isinstance(exc, kinds)), "other")


class Transport(Protocol):
    def describe(self) -> str: ...

    def send(self, message: EmailMessage) -> None: ...

    def close(self) -> None: ...


class SmtpTransport:
    """smtplib (green under eventlet), one connection reused for a batch."""

    def __init__(self, settings: Settings):
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


def transport_for(settings: Settings) -> Transport:
    """SMTP when ``smtp_host`` is set, else ``.eml`` files in ``mail_dir``."""
    if settings.smtp_host:
        return SmtpTransport(settings)
    return DirectoryTransport(settings.mail_dir)
