"""What a mail says: rendering one from an event with the Jinja2 templates in
``templates/``, and the records a mail travels as.

A handler builds a :class:`Mail` from an event (:func:`status_changed_mail`,
:func:`certificate_issued_mail`) in the language it chose, and records it; the sender
later reads it back as an :class:`Outgoing`::

    mail = status_changed_mail(change, student, settings.mail_from, "pt_BR")
    repo.record_many(Session, [mail])

The templates are written in English (``{% trans %}``, ``_()``) and translated through
:mod:`services.i18n`; status names and dates are the language's too.
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

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape

from services import i18n

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATUS_CHANGED = "student_status_changed"
CERTIFICATE_ISSUED = "certificate_issued"

_LOADER = FileSystemLoader(TEMPLATES)
_OPTIONS = {  # the same objects every time: one environment per language
    "autoescape": select_autoescape(["html"]),
    "undefined": StrictUndefined,  # a misspelt variable is a bug, not an empty line in a mail
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": True,
    "auto_reload": False,  # the templates ship with the code: read once, not stat()ed at every mail
}


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
    # when it was due before it was claimed: given back unsent, it is due then again (its place kept)
    due_at: datetime | None = None


def render(kind: str, language: str, **context: Any) -> tuple[str, str, str]:
    """``(subject, text, html)`` in ``language`` from ``templates/<kind>.subject.txt``, ``.txt``
    and ``.html``."""
    templates = i18n.environment(_LOADER, language, **_OPTIONS)
    context["lang"] = language.replace("_", "-")  # the HTML's lang attribute (BCP 47)
    subject = templates.get_template(f"{kind}.subject.txt").render(context)
    text = templates.get_template(f"{kind}.txt").render(context)
    html = templates.get_template(f"{kind}.html").render(context)
    return " ".join(subject.split()), text, html  # a header is one line


def message_id(dedup_key: str, mail_from: str) -> str:
    """The same ``Message-ID`` for every attempt (and any resend) of one mail."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "mensageria.local"
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
    return f"<notification.{digest}@{domain}>"


def status_changed_key(change: dict, recipient: str) -> str:
    event = change.get("request_id") or f"{change['student_id']}:v{change['version']}"
    return f"{STATUS_CHANGED}:{event}:{recipient}"


def certificate_issued_key(issued: dict) -> str:
    return f"{CERTIFICATE_ISSUED}:{issued['code']}:{issued['student_email']}"


def attachment(document: dict) -> Attachment | None:
    """A PDF as ``get_certificate_pdf`` answers it, as an :class:`Attachment`; None if unreadable."""
    try:
        return Attachment(
            str(document["filename"]),
            str(document.get("content_type") or "application/octet-stream"),
            base64.b64decode(document["data"], validate=True),
        )
    except (KeyError, TypeError, AttributeError, binascii.Error):
        return None


def credential_attachment(credential: dict) -> Attachment | None:
    """A credential as ``get_certificate_credential`` answers it, as an :class:`Attachment` (the
    JWT); None if unreadable."""
    fields = [credential.get(k) if isinstance(credential, dict) else None for k in ("filename", "media_type", "jwt")]
    if not all(isinstance(value, str) and value for value in fields):
        return None
    filename, media_type, token = fields
    return Attachment(filename, media_type, token.encode())


def status_changed_mail(change: dict, student: dict, mail_from: str, language: str) -> Mail:
    """The mail for one ``student_status_changed`` event, to the student, in ``language``."""
    recipient = student["email"]
    dedup_key = status_changed_key(change, recipient)
    from_status, occurred_at = change.get("from_status"), change.get("occurred_at")
    subject, text, html = render(
        STATUS_CHANGED,
        language,
        name=student["name"],
        course=change.get("course") or student["course"],
        status=change["to_status"],
        from_status=i18n.status_name(from_status, language) if from_status else None,
        to_status=i18n.status_name(change["to_status"], language),
        reason=change.get("reason"),
        occurred_at=i18n.format_datetime(occurred_at, language) if occurred_at else None,
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


def certificate_issued_mail(issued: dict, attachments: list[Attachment], mail_from: str, language: str) -> Mail:
    """The mail for one ``certificate_issued`` event, in ``language``; ``attachments``: the PDF and
    the signed credential, those that could be had."""
    dedup_key = certificate_issued_key(issued)
    issued_at = issued.get("issued_at")
    subject, text, html = render(
        CERTIFICATE_ISSUED,
        language,
        name=issued["student_name"],
        course=issued["course"],
        code=issued["code"],
        issued_at=i18n.format_date(issued_at, language) if issued_at else None,  # the day, as on the PDF
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
