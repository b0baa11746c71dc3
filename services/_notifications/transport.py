"""Delivery: a recorded mail as a MIME message (:func:`compose`), sent over SMTP or, with no
``smtp_host``, written as an ``.eml`` file to ``mail_dir``::

    transport = transport_for(settings)
    try:
        transport.send(compose(outgoing, settings.mail_from))
    except Exception as exc:
        reason = describe_error(exc)
    finally:
        transport.close()
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import functools
import os
import re
import secrets
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

from services._notifications.mail import Outgoing
from services.infra.settings import Settings

MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class Composed:
    """A mail ready to go: its envelope and its message's bytes, lines ending in ``\\n``."""

    sender: str  # the envelope's MAIL FROM: ``mail_from``'s address
    recipient: str
    message_id: str
    created_at: datetime
    data: bytes
    smtputf8: bool = False  # an address is not ASCII: only a server with SMTPUTF8 takes it


def compose(mail: Outgoing, mail_from: str) -> Composed:
    """``mail`` as sent: text with an HTML alternative, plus its attachments, in order.

    A plain mail (ASCII addresses, attachments named in plain characters: all but a few) is
    written here directly, the MIME parts encoded by ``binascii`` (:func:`_write`); the
    ``email`` package's objects cost five times as much to build and to flatten and were most
    of the notifications service's work. Any other mail is built by :func:`build_message`."""
    sender = _address_of(mail_from)
    if _plain(mail, mail_from):
        return Composed(sender, mail.recipient, mail.message_id, mail.created_at, _write(mail, mail_from))
    message = build_message(mail, mail_from)
    international = not (sender + mail.recipient).isascii()
    policy = message.policy.clone(utf8=True) if international else message.policy  # as smtplib sends it
    return Composed(
        sender, mail.recipient, mail.message_id, mail.created_at, message.as_bytes(policy=policy), international
    )


# what :func:`_write` writes as it is: a dot-atom ASCII address (no quoting needed), a bare
# token as a MIME type or a file name, a header value of printable ASCII
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9.-]+")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")  # its header line stays within 78 characters
_HEADER_VALUE = re.compile(r"[\x21-\x7e]{1,200}")


def _plain(mail: Outgoing, mail_from: str) -> bool:
    return (
        _ADDRESS.fullmatch(mail.recipient) is not None
        and _from_line(mail_from).isascii()
        and _ADDRESS.fullmatch(_address_of(mail_from)) is not None
        and "=?" not in mail.subject  # read as an encoded word: the email package decides
        and _HEADER_VALUE.fullmatch(mail.message_id) is not None
        and (not mail.correlation_id or _HEADER_VALUE.fullmatch(mail.correlation_id) is not None)
        and all(
            _MIME_TYPE.fullmatch(a.content_type) is not None and _FILE_NAME.fullmatch(a.filename) is not None
            for a in mail.attachments
        )
    )


@functools.lru_cache(maxsize=8)
def _address_of(mail_from: str) -> str:
    return parseaddr(mail_from)[1]


@functools.lru_cache(maxsize=8)
def _from_line(mail_from: str) -> str:
    """The ``From:`` line as the ``email`` package writes it (a display name RFC 2047 encoded)."""
    message = EmailMessage()
    message["From"] = mail_from
    return message.as_string().rstrip("\n")


def _subject_line(subject: str) -> str:
    """Folded at 78 characters; RFC 2047 encoded words when not ASCII (see :func:`_set_subject`)."""
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return "Subject: " + Header(subject, charset, header_name="Subject").encode()


def _write(mail: Outgoing, mail_from: str) -> bytes:
    """The MIME message of a plain mail (:func:`_plain`), 7-bit: the bodies quoted-printable, the
    attachments base64. A boundary starts with ``=_``, which neither encoding can produce."""
    token = secrets.token_hex(12)
    headers = [
        _from_line(mail_from),
        f"To: {mail.recipient}",
        _subject_line(mail.subject),
        f"Date: {format_datetime(mail.created_at)}",
        f"Message-ID: {mail.message_id}",
        "Auto-Submitted: auto-generated",  # RFC 3834: no auto-replies to this
    ]
    if mail.correlation_id:  # the request the mail is about, from its X-Request-Id on
        headers.append(f"X-Correlation-ID: {mail.correlation_id}")
    headers.append("MIME-Version: 1.0")
    head = ("\n".join(headers) + "\n").encode()
    alternative = b"=_alternative.%s" % token.encode()
    bodies = [
        b'--%s\nContent-Type: text/%s; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n\n%s'
        % (alternative, subtype, _quoted_printable(body))
        for subtype, body in ((b"plain", mail.body_text), (b"html", mail.body_html))
    ]
    texts = b'Content-Type: multipart/alternative;\n boundary="%s"\n\n%s' % (
        alternative,
        b"\n".join([*bodies, b"--%s--\n" % alternative]),
    )
    if not mail.attachments:
        return head + texts
    mixed = b"=_mixed.%s" % token.encode()
    sections = [texts] + [
        b'Content-Type: %s\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment;\n filename="%s"\n\n%s'
        % (attachment.content_type.encode(), attachment.filename.encode(), base64.encodebytes(attachment.data))
        for attachment in mail.attachments
    ]
    parts = b"".join(b"--%s\n%s\n" % (mixed, section) for section in sections)
    return head + b'Content-Type: multipart/mixed;\n boundary="%s"\n\n%s--%s--\n' % (mixed, parts, mixed)


def _quoted_printable(text: str) -> bytes:
    """``text`` in UTF-8, quoted-printable, its lines ending in ``\\n`` and the last one too (as the
    ``email`` package writes a text part)."""
    return binascii.b2a_qp(b"\n".join(text.encode().splitlines()) + b"\n", istext=True)


def build_message(mail: Outgoing, mail_from: str) -> EmailMessage:
    """Text with an HTML alternative, plus its attachments, in order, built by the ``email``
    package: what :func:`compose` writes itself for a plain mail, and any mail besides."""
    message = EmailMessage()
    message["From"] = mail_from
    # a local part not in ASCII (RFC 6531) is refused by ``Address``: given as it is, sent with SMTPUTF8
    message["To"] = Address(addr_spec=mail.recipient) if mail.recipient.isascii() else mail.recipient
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


class SmtpUtf8NotSupported(smtplib.SMTPNotSupportedError):
    """The mail's addresses need SMTPUTF8 (RFC 6531) and the server does not offer it."""


_SMTP_KINDS: tuple[tuple[type[BaseException], str], ...] = (  # the first matching class decides
    (smtplib.SMTPAuthenticationError, "auth"),
    (smtplib.SMTPSenderRefused, "sender_refused"),
    (smtplib.SMTPRecipientsRefused, "recipient_refused"),
    (smtplib.SMTPDataError, "data_refused"),
    (smtplib.SMTPConnectError, "connection"),
    (smtplib.SMTPServerDisconnected, "connection"),
    (SmtpUtf8NotSupported, "smtputf8"),
    (smtplib.SMTPNotSupportedError, "tls"),  # e.g. no STARTTLS offered
    (smtplib.SMTPException, "smtp"),
    (TimeoutError, "timeout"),
    (ssl.SSLError, "tls"),
    (ConnectionError, "connection"),
    (socket.gaierror, "connection"),  # the host name does not resolve
)


def error_kind(exc: BaseException) -> str:
    """A failed send's kind, one of a few words (a metric's label): auth, sender_refused,
    recipient_refused, data_refused, connection, tls, smtputf8, smtp, timeout or other."""
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "connection"
    return next((kind for kinds, kind in _SMTP_KINDS if isinstance(exc, kinds)), "other")


class Transport(Protocol):
    def describe(self) -> str: ...

    def send(self, message: Composed) -> None: ...

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

    def send(self, message: Composed) -> None:
        if self.connection is None:
            self.connection = self._connect()
        options = self._options(message)  # refused before a word is sent: the connection serves the next mail
        try:
            self.connection.sendmail(message.sender, [message.recipient], message.data.replace(b"\n", b"\r\n"), options)
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

    def _options(self, message: Composed) -> tuple[str, ...]:
        """``MAIL FROM``'s options: SMTPUTF8 for a mail to or from an address that is not ASCII
        (refused, as ``smtplib.send_message`` refuses it, by a server that does not offer it)."""
        if not message.smtputf8:
            return ()
        if not self.connection.has_extn("smtputf8"):
            raise SmtpUtf8NotSupported(
                "One or more source or delivery addresses require internationalized email support, "
                "but the server does not advertise the required SMTPUTF8 capability"
            )
        return ("SMTPUTF8", "BODY=8BITMIME")

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

    def send(self, message: Composed) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        when = message.created_at.strftime("%Y%m%dT%H%M%SZ")
        local = message.message_id.strip("<>").partition("@")[0]
        path = self.directory / f"{when}-{local}.eml"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(message.data)
        os.replace(partial, path)  # readers never see half a mail

    def close(self) -> None:
        pass


def transport_for(settings: Settings) -> Transport:
    """SMTP when ``smtp_host`` is set, else ``.eml`` files in ``mail_dir``."""
    if settings.smtp_host:
        return SmtpTransport(settings)
    return DirectoryTransport(settings.mail_dir)
