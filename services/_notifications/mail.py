"""What a mail says: rendering one from an event with the Jinja2 templates in
``templates/``, and the records a mail travels as.

A handler builds a :class:`Mail` from an event (:func:`status_changed_mail`,
:func:`certificate_issued_mail`) and records it; the sender later reads it back
as an :class:`Outgoing`::

    mail = status_changed_mail(change, student, settings.mail_from)
    repo.record_many(Session, [mail])
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATUS_CHANGED = "student_status_changed"
CERTIFICATE_ISSUED = "certificate_issued"

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable is a bug, not an empty line in a mail
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Attachment:
    """A file a mail carries."""

    filename: str
    content_type: str
    data: bytes


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
    attachments: tuple[Attachment, ...] = ()
    correlation_id: str | None = None  # the event's (None: the id of the work in hand)
    traceparent: str | None = None  # the span it was made in (None: the one in hand; traces on)


@dataclass(frozen=True)
class Outgoing:
    """A recorded mail as the sender sends it, detached from any session."""

    id: int
    recipient: str
    subject: str
    body_text: str
    body_html: str
    attachments: tuple[Attachment, ...]
    message_id: str
    created_at: datetime
    attempts: int
    kind: str = ""  # STATUS_CHANGED or CERTIFICATE_ISSUED
    correlation_id: str | None = None  # sent as the X-Correlation-ID header
    traceparent: str | None = None  # sending it is a span of this one's trace (traces on)


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


def attachment(document: dict) -> Attachment | None:
    """``get_certificate_pdf``'s answer as an :class:`Attachment`; None if unreadable."""
    try:
        return Attachment(
            str(document["filename"]),
            str(document.get("content_type") or "application/octet-stream"),
            base64.b64decode(document["data"], validate=True),
        )
    except (KeyError, TypeError, AttributeError, binascii.Error):
        return None


def credential_attachment(credential: dict) -> Attachment | None:
    """``get_certificate_credential``'s answer as an :class:`Attachment` (the JWT); None if unreadable."""
    try:
        return Attachment(str(credential["filename"]), str(credential["media_type"]), credential["jwt"].encode())
    except (KeyError, TypeError, AttributeError):
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
        correlation_id=change.get("correlation_id"),
        traceparent=change.get("traceparent"),
    )


def certificate_issued_mail(issued: dict, attachments: list[Attachment], mail_from: str) -> Mail:
    """The mail for one ``certificate_issued`` event; ``attachments``: the PDF and the signed
    credential, those that could be had."""
    dedup_key = certificate_issued_key(issued)
    subject, text, html = render(
        CERTIFICATE_ISSUED,
        name=issued["student_name"],
        course=issued["course"],
        code=issued["code"],
        issued_at=_when(issued.get("issued_at")),
        verification_url=issued["verification_url"],
        pdf_url=issued.get("pdf_url"),
        has_attachment=any(a.content_type == "application/pdf" for a in attachments),
        has_credential=any(a.filename.endswith(".jwt") for a in attachments),
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
        attachments=tuple(attachments),
        correlation_id=issued.get("correlation_id"),
    )
