"""Notifications without a broker: rendering, MIME encoding, the backoff schedule,
the notification log on a real SQLite file, and the handlers through
``worker_factory`` (RPC proxies and the sender replaced by mocks)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import smtplib
from datetime import UTC, datetime, timedelta
from unittest.mock import MagicMock

import eventlet
import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services import notifications
from services._notifications import mail as mails
from services._notifications import repo, sender, transport
from services._notifications.models import Notification, NotificationsBase
from services.exceptions import CertificateNotFound, NotificationNotFound, ValidationFailed
from services.infra.batching import Delivery
from services.infra.db import build_engine
from services.infra.settings import ConfigError, Settings
from services.notifications import NotificationsService

MAIL_FROM = "Secretaria <secretaria@escola.example>"
NOW = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
PDF = b"%PDF-1.4\n% a tiny stand-in\n%%EOF\n"

CHANGE = {
    "student_id": 7,
    "from_status": "active",
    "to_status": "completed",
    "reason": "passed <all> exams & more",
    "actor": "registrar",
    "request_id": "5f0c3f5e-9b7e-4a52-9d43-2d7d0c6b1a11",
    "version": 2,
    "occurred_at": NOW,
    "course": None,
}
STUDENT = {"id": 7, "name": "João Conceição", "email": "joao@escola.example", "course": "Física Nuclear"}
ISSUED = {
    "code": "c" * 32,
    "student_id": 7,
    "student_name": "João Conceição",
    "student_email": "joao@escola.example",
    "course": "Física Nuclear",
    "issued_at": NOW,
    "verification_url": f"https://escola.example/certificates/{'c' * 32}",
    "pdf_url": f"https://escola.example/certificates/{'c' * 32}.pdf",
}


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
FILES = [
    mails.Attachment("certificate.pdf", "application/pdf", PDF),
    mails.Attachment("certificate.jwt", "application/vc+jwt", JWT.encode()),
]


def outgoing(mail: mails.Mail, notification_id: int = 1) -> mails.Outgoing:
    return mails.Outgoing(
        id=notification_id,
        recipient=mail.recipient,
        subject=mail.subject,
        body_text=mail.body_text,
        body_html=mail.body_html,
        attachments=mail.attachments,
        message_id=mail.message_id,
        created_at=NOW,
        attempts=0,
    )


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


class TestRendering:
    def test_status_change_in_text_and_html(self):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        assert mail.subject == "João Conceição, your status in Física Nuclear is now completed"
        assert mail.recipient == "joao@escola.example" and mail.student_id == 7
        assert mail.dedup_key == f"student_status_changed:{CHANGE['request_id']}:joao@escola.example"
        for body in (mail.body_text, mail.body_html):
            assert (
                "João Conceição" in body and "Física Nuclear" in body and "January 2, 2026, 10:00\u202fAM UTC" in body
            )
            assert "Congratulations" in body
        assert "from active to completed" in mail.body_text
        assert "Reason: passed <all> exams & more" in mail.body_text, "plain text is not escaped"
        assert "passed &lt;all&gt; exams &amp; more" in mail.body_html, "HTML is escaped"
        assert mail.attachments == ()

    def test_the_event_course_wins_and_missing_fields_are_fine(self):
        change = {"student_id": 7, "to_status": "active", "version": 1, "course": "Química"}
        mail = mails.status_changed_mail(change, STUDENT, MAIL_FROM, "en")
        assert mail.subject.endswith("your status in Química is now active")
        assert "is now active" in mail.body_text and "Reason" not in mail.body_text
        assert mail.dedup_key == "student_status_changed:7:v1:joao@escola.example"

    def test_certificate_with_links_and_attachment(self):
        mail = mails.certificate_issued_mail(ISSUED, FILES, MAIL_FROM, "en")
        assert mail.subject == "João Conceição, your certificate for Física Nuclear is ready"
        assert mail.dedup_key == f"certificate_issued:{'c' * 32}:joao@escola.example"
        assert ISSUED["verification_url"] in mail.body_text
        assert f'href="{ISSUED["verification_url"]}"' in mail.body_html
        assert "attached" in mail.body_text and "attached" in mail.body_html
        assert "credential" in mail.body_text and "Open Badges 3.0" in mail.body_html
        assert mail.attachments == tuple(FILES)

    def test_certificate_without_pdf_links_to_it(self):
        mail = mails.certificate_issued_mail(ISSUED, [], MAIL_FROM, "en")
        assert "attached" not in mail.body_text and ISSUED["pdf_url"] in mail.body_text
        assert mail.attachments == () and "credential" not in mail.body_text

    def test_a_subject_is_one_line(self):
        mail = mails.status_changed_mail(CHANGE, {**STUDENT, "name": "Ana\r\nBcc: x@evil.example"}, MAIL_FROM, "en")
        assert "\n" not in mail.subject and "\r" not in mail.subject

    def test_templates_are_read_once_not_checked_at_every_mail(self, monkeypatch):
        first = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")

        def no_stat(path):  # what Jinja2's FileSystemLoader asks to know whether a template changed
            raise AssertionError(f"{path} looked at again")

        monkeypatch.setattr("os.path.getmtime", no_stat)
        again = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        assert (again.subject, again.body_text, again.body_html) == (first.subject, first.body_text, first.body_html)

    def test_attachment_decodes_get_certificate_pdf(self):
        document = {"filename": "c.pdf", "content_type": "application/pdf", "data": base64.b64encode(PDF).decode()}
        assert mails.attachment(document) == mails.Attachment("c.pdf", "application/pdf", PDF)
        assert mails.attachment({"filename": "c.pdf", "data": "not base64!"}) is None
        assert mails.attachment({}) is None
        credential = {"jwt": JWT, "filename": "c.jwt", "media_type": "application/vc+jwt", "credential": {}}
        assert mails.credential_attachment(credential) == mails.Attachment("c.jwt", "application/vc+jwt", JWT.encode())
        assert mails.credential_attachment({"jwt": None, "filename": "c.jwt"}) is None


def decoded(mail: mails.Mail) -> tuple[str, str, str]:
    """The subject, text and HTML of ``mail`` as a mail client reads them from the message sent."""
    message = parse(transport.compose(outgoing(mail), MAIL_FROM).data)
    return message["Subject"], message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


class TestLanguages:
    def test_a_status_change_in_brazilian_portuguese(self):
        subject, text, html = decoded(mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "pt_BR"))
        assert subject == "João Conceição, seu status no curso Física Nuclear agora é concluído"
        assert text.startswith("Olá, João Conceição,\n\n")
        assert (
            "Seu status no curso Física Nuclear mudou de ativo para concluído em 2 de janeiro de 2026 10:00 UTC."
            in text
        )
        assert "Motivo: passed <all> exams & more" in text
        assert "Parabéns por concluir o curso! Seu certificado será enviado em outro e-mail." in text
        assert text.endswith("Esta é uma mensagem automática; as respostas não são lidas.\n")
        assert '<html lang="pt-BR">' in html and "<title>Seu status agora é concluído</title>" in html
        assert (
            "Seu status no curso <strong>Física Nuclear</strong> mudou de <strong>ativo</strong> para "
            "<strong>concluído</strong> em 2 de janeiro de 2026 10:00 UTC." in html
        )
        assert "Motivo: passed &lt;all&gt; exams &amp; more" in html
        assert "Esta é uma mensagem automática do mensageria; as respostas não são lidas." in html
        assert "Hello" not in text + html and "completed" not in text + html

    def test_a_status_change_in_english(self):
        subject, text, html = decoded(mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en"))
        assert subject == "João Conceição, your status in Física Nuclear is now completed"
        assert (
            "Your status in Física Nuclear changed from active to completed on January 2, 2026, 10:00\u202fAM UTC."
            in text
        )
        assert '<html lang="en">' in html and "<strong>completed</strong>" in html
        assert "This message was sent automatically by mensageria; replies are not read." in html

    @pytest.mark.parametrize(
        ("status", "english", "portuguese"),
        [
            ("enrolled", "enrolled", "matriculado"),
            ("active", "active", "ativo"),
            ("suspended", "suspended", "suspenso"),
            ("withdrawn", "withdrawn", "desligado"),
        ],
    )
    def test_every_status_name_and_a_first_status_without_a_time(self, status, english, portuguese):
        change = {"student_id": 7, "to_status": status, "version": 1}
        subject, text, html = decoded(mails.status_changed_mail(change, STUDENT, MAIL_FROM, "pt_BR"))
        assert subject.endswith(f"agora é {portuguese}")
        assert f"Seu status no curso Física Nuclear agora é {portuguese}." in text
        assert f"agora é <strong>{portuguese}</strong>." in html
        assert "Motivo" not in text
        assert ("Se você não esperava por isso, entre em contato com a sua escola." in text) == (status == "withdrawn")
        subject, text, _ = decoded(mails.status_changed_mail(change, STUDENT, MAIL_FROM, "en"))
        assert subject.endswith(f"is now {english}") and f"is now {english}." in text

    def test_a_status_change_since_a_time(self):
        change = {"student_id": 7, "to_status": "active", "version": 1, "occurred_at": NOW}
        _, text, _ = decoded(mails.status_changed_mail(change, STUDENT, MAIL_FROM, "pt_BR"))
        assert "Seu status no curso Física Nuclear agora é ativo (desde 2 de janeiro de 2026 10:00 UTC)." in text

    def test_a_certificate_in_brazilian_portuguese(self):
        mail = mails.certificate_issued_mail(ISSUED, FILES, MAIL_FROM, "pt_BR")
        subject, text, html = decoded(mail)
        assert subject == "João Conceição, seu certificado do curso Física Nuclear está pronto"
        assert (
            "Parabéns por concluir o curso Física Nuclear! Seu certificado foi emitido em 2 de janeiro de 2026." in text
        )
        assert "Ele está anexado a este e-mail em PDF." in text
        assert f"Qualquer pessoa pode confirmar a autenticidade dele em:\n{ISSUED['verification_url']}\n" in text
        assert f"Código do certificado: {'c' * 32}" in text
        assert '<html lang="pt-BR">' in html and "<title>Seu certificado do curso Física Nuclear</title>" in html
        assert "Parabéns por concluir o curso <strong>Física Nuclear</strong>!" in html
        assert f"Código do certificado: <code>{'c' * 32}</code>" in html
        assert mail.attachments == tuple(FILES)
        assert "credencial digital assinada (Open Badges 3.0)" in text

    def test_a_certificate_without_its_pdf_in_both_languages(self):
        issued = {**ISSUED, "issued_at": None}
        _, text, html = decoded(mails.certificate_issued_mail(issued, [], MAIL_FROM, "pt_BR"))
        assert "Seu certificado foi emitido." in text and f"Baixe-o em PDF: {ISSUED['pdf_url']}" in text
        assert f'<a href="{ISSUED["pdf_url"]}">Baixe-o em PDF</a>' in html
        subject, text, html = decoded(mails.certificate_issued_mail(issued, [], MAIL_FROM, "en"))
        assert subject == "João Conceição, your certificate for Física Nuclear is ready"
        assert "Your certificate was issued." in text and f"Download it as a PDF: {ISSUED['pdf_url']}" in text
        assert '<html lang="en">' in html and "Certificate code: <code>" in html

    def test_an_unknown_language_is_the_default(self):
        assert mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "xx").subject == (
            mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en").subject
        )


def read(message: email.message.EmailMessage) -> dict:
    """What a mail client shows of ``message``."""
    headers = ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-Correlation-ID", "MIME-Version")
    return {
        "headers": {name: message[name] for name in headers},
        "type": message.get_content_type(),
        "text": message.get_body(("plain",)).get_content(),
        "html": message.get_body(("html",)).get_content(),
        "attachments": [(a.get_filename(), a.get_content_type(), a.get_content()) for a in message.iter_attachments()],
    }


class TestMessage:
    @pytest.mark.parametrize("raw", [False, True], ids=["composed", "email-package"])
    def test_non_ascii_headers_and_bodies_survive_a_7bit_round_trip(self, raw):
        mail = mails.certificate_issued_mail(ISSUED, FILES, MAIL_FROM, "en")
        if raw:
            raw = transport.build_message(outgoing(mail), MAIL_FROM).as_bytes()
        else:
            composed = transport.compose(outgoing(mail), MAIL_FROM)
            assert (composed.sender, composed.recipient, composed.smtputf8) == (
                "secretaria@escola.example",
                "joao@escola.example",
                False,
            )
            raw = composed.data
        raw.decode("ascii")  # 7-bit clean: any SMTP server takes it
        assert b"Subject: =?utf-8?" in raw, "non-ASCII subject is RFC 2047 encoded"

        message = parse(raw)
        assert message["Subject"] == mail.subject
        assert message["From"] == MAIL_FROM and message["To"] == "joao@escola.example"
        assert message["Message-ID"] == mail.message_id
        assert message["Date"] == "Fri, 02 Jan 2026 10:00:00 +0000"
        assert message.get_content_type() == "multipart/mixed"
        assert message.get_body(("plain",)).get_content() == mail.body_text
        assert message.get_body(("html",)).get_content() == mail.body_html
        [pdf, credential] = message.iter_attachments()
        assert (credential.get_filename(), credential.get_content_type()) == ("certificate.jwt", "application/vc+jwt")
        assert pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "certificate.pdf"
        assert pdf.get_content() == PDF

    @pytest.mark.parametrize(
        "subject",
        [
            "João Conceição, seu certificado do curso Física Nuclear está pronto",
            "Zoë Ærøskøbing, seu status no curso Música agora é desligado",
            "Ana Lima, your status in Physics is now active",
            "Ana " * 40 + "é " + "b " * 60,
            "Ana   Lima " * 12,
        ],
    )
    def test_a_long_subject_keeps_every_space_however_it_is_folded(self, subject):
        mail = dataclasses.replace(
            outgoing(mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")), subject=subject
        )
        message = transport.build_message(mail, MAIL_FROM)
        composed = transport.compose(mail, MAIL_FROM).data
        for raw in (message.as_bytes(), message.as_bytes(policy=message.policy.clone(linesep="\r\n")), composed):
            assert all(len(line) <= 78 for line in raw.splitlines()), "folded"
            assert parse(raw)["Subject"] == subject

    def test_without_attachment_it_is_an_alternative(self):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        message = parse(transport.compose(outgoing(mail), MAIL_FROM).data)
        assert message.get_content_type() == "multipart/alternative"
        assert "João Conceição" in message.get_body(("plain",)).get_content()

    @pytest.mark.parametrize(
        "change",
        [
            {},
            {"correlation_id": "req-1f2e"},
            {"subject": "Ana Lima, your status is now active"},
            {"body_text": "one line, no end", "body_html": "<p>x</p>\r\n<p>y</p>"},
            {
                "body_text": "trailing spaces   \n\ttab\n.dot\nFrom here\n" + "é" * 300,
                "body_html": "=?utf-8?q?x?= " * 40,
            },
            {"attachments": ()},
            {"attachments": (mails.Attachment("empty.bin", "application/octet-stream", b""),)},
            {"attachments": (mails.Attachment("all-bytes.bin", "application/octet-stream", bytes(range(256)) * 9),)},
        ],
    )
    def test_a_composed_mail_reads_as_the_email_package_builds_it(self, change):
        mail = dataclasses.replace(outgoing(mails.certificate_issued_mail(ISSUED, FILES, MAIL_FROM, "pt_BR")), **change)
        composed = transport.compose(mail, MAIL_FROM).data
        composed.decode("ascii")
        assert b"From: Secretaria <secretaria@escola.example>\n" in composed, "written here, not by the package"
        assert read(parse(composed)) == read(parse(transport.build_message(mail, MAIL_FROM).as_bytes()))

    @pytest.mark.parametrize(
        ("change", "mail_from", "smtputf8"),
        [
            ({"recipient": "joão@escola.example"}, MAIL_FROM, True),
            ({"recipient": "ana@escola.example"}, "Secretaria <secretária@escola.example>", True),
            ({"recipient": "ana@escolá.example"}, MAIL_FROM, True),
            ({"subject": "=?utf-8?q?not_an_encoded_word?="}, MAIL_FROM, False),
            ({"attachments": (mails.Attachment("certificado de João.pdf", "application/pdf", PDF),)}, MAIL_FROM, False),
            ({"correlation_id": "two words"}, MAIL_FROM, False),
        ],
    )
    def test_any_other_mail_is_built_by_the_email_package(self, change, mail_from, smtputf8):
        mail = dataclasses.replace(outgoing(mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")), **change)
        composed = transport.compose(mail, mail_from)
        assert composed.smtputf8 is smtputf8
        assert composed.recipient == mail.recipient and composed.sender == email.utils.parseaddr(mail_from)[1]
        message = transport.build_message(mail, mail_from)
        policy = message.policy.clone(utf8=True) if smtputf8 else message.policy
        assert read(parse(composed.data)) == read(parse(message.as_bytes(policy=policy)))
        assert (b"jo\xc3\xa3o@" in composed.data or b"\xc3\xa1" in composed.data) is smtputf8, "UTF-8 headers"

    def test_message_id_is_stable_per_mail_and_uses_the_sender_domain(self):
        first = mails.message_id("certificate_issued:abc:joao@escola.example", MAIL_FROM)
        assert first == mails.message_id("certificate_issued:abc:joao@escola.example", MAIL_FROM)
        assert first != mails.message_id("certificate_issued:abd:joao@escola.example", MAIL_FROM)
        assert first.startswith("<notification.") and first.endswith("@escola.example>")

    def test_smtp_errors_are_described_on_one_line(self):
        import smtplib

        assert transport.describe_error(ConnectionRefusedError(111, "Connection refused")) == (
            "ConnectionRefusedError: [Errno 111] Connection refused"
        )
        refused = smtplib.SMTPRecipientsRefused({"x@y.example": (550, b"5.1.1 no such\nuser")})
        assert transport.describe_error(refused) == "SMTPRecipientsRefused: x@y.example (550 5.1.1 no such user)"
        assert transport.describe_error(smtplib.SMTPDataError(451, b"try later")) == "SMTPDataError: 451 try later"


class TestSettingsAndBackoff:
    def test_backoff_doubles_from_the_base_delay(self):
        settings = Settings(mail_max_attempts=6, mail_retry_base_delay=2)
        assert sender.retry_schedule(settings) == [2, 4, 8, 16, 32]
        assert [repo.retry_delay(0.2, n) for n in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.8])
        assert sender.retry_schedule(Settings(mail_max_attempts=1)) == []

    def test_settings_from_config_yaml_values(self):
        settings = Settings.from_config(
            {"SMTP_HOST": None, "SMTP_PORT": "2525", "SMTP_STARTTLS": "true", "SMTP_PASSWORD": None}
        )
        assert settings.smtp_host is None and settings.smtp_port == 2525 and settings.smtp_starttls is True
        # the project's defaults, those of config.yaml (no password: the transport logs in with "")
        assert settings.smtp_password is None and settings.mail_max_attempts == 10
        assert settings.mail_retry_base_delay == 30
        assert Settings.from_config({"SMTP_HOST": " ", "SMTP_STARTTLS": False}).smtp_host is None
        assert isinstance(transport.transport_for(settings), transport.DirectoryTransport)
        assert isinstance(transport.transport_for(Settings(smtp_host="mx")), transport.SmtpTransport)

    def test_smtp_connections_at_once_four_by_default_at_least_one(self):
        assert Settings().smtp_connections == 4
        assert Settings.from_config({"SMTP_CONNECTIONS": "2"}).smtp_connections == 2
        with pytest.raises(ConfigError, match="SMTP_CONNECTIONS must be at least 1, got '0'"):
            Settings.from_config({"SMTP_CONNECTIONS": "0"})
        with pytest.raises(ConfigError, match="SMTP_CONNECTIONS must be a whole number, got 'two'"):
            Settings.from_config({"SMTP_CONNECTIONS": "two"})


def test_directory_transport_writes_one_eml_per_mail(tmp_path):
    mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
    directory = transport.DirectoryTransport(tmp_path / "mail")
    directory.send(transport.compose(outgoing(mail), MAIL_FROM))
    directory.send(transport.compose(outgoing(mail), MAIL_FROM))  # a resend after a crash
    [path] = (tmp_path / "mail").iterdir()
    assert path.name.startswith("20260102T100000Z-notification.") and path.suffix == ".eml"
    message = parse(path.read_bytes())
    assert message["Subject"] == mail.subject and message["Message-ID"] == mail.message_id


# --- the log ----------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    engine = build_engine(f"sqlite:///{tmp_path}/notifications.db")
    NotificationsBase.metadata.create_all(engine)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


def state_of(db, notification_id: int) -> Notification:
    with db() as session:
        return session.get(Notification, notification_id)


class TestLog:
    lease = timedelta(seconds=60)

    def record_one(self, db) -> int:
        assert repo.record(db, mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en"))
        with db() as session:
            return session.scalar(select(Notification.id))

    def test_a_mail_is_recorded_once_per_dedup_key(self, db):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        assert repo.record(db, mail) is True
        assert repo.record(db, mail) is False
        with db() as session:
            [row] = session.scalars(select(Notification))
        assert (row.state, row.attempts, row.kind) == ("pending", 0, "student_status_changed")

    def test_a_twin_recorded_concurrently_is_recognised(self, db, monkeypatch):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        assert repo.record(db, mail)
        answers = iter([False, True])  # not there at the check, there after the unique key refused us
        monkeypatch.setattr(repo, "exists", lambda session, key: next(answers))
        assert repo.record(db, mail) is False

    def test_claimed_mails_are_leased(self, db):
        self.record_one(db)
        with db.begin() as session:
            [claimed] = repo.claim_due(session, NOW + timedelta(days=999), 10, self.lease)
        with db.begin() as session:
            assert repo.claim_due(session, NOW + timedelta(days=999, seconds=59), 10, self.lease) == []
        with db.begin() as session:
            assert [m.id for m in repo.claim_due(session, NOW + timedelta(days=1000), 10, self.lease)] == [claimed.id]

    def test_two_instances_claiming_at_once_never_take_the_same_mail(self, db):
        """Two senders on one SQLite file (two connections, the second in an OS thread of its own, as
        another process would be): the second claim waits for the first's lease and then sees it."""
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        for n in range(3):
            assert repo.record(db, dataclasses.replace(mail, dedup_key=f"{mail.dedup_key}-{n}", message_id=f"<{n}@x>"))
        with db() as session:
            ids = set(session.scalars(select(Notification.id)))
        engine = build_engine(str(db.kw["bind"].url))
        due, theirs = NOW + timedelta(days=999), []

        def claim() -> None:
            with sessionmaker(bind=engine).begin() as session:
                theirs.extend(m.id for m in repo.claim_due(session, due, 10, self.lease))

        other = eventlet.patcher.original("threading").Thread(target=claim)  # not a green thread
        with db.begin() as first:
            mine = {m.id for m in repo.claim_due(first, due, 2, self.lease)}
            other.start()
            other.join(0.5)
            assert other.is_alive()  # waiting for the first claim's write lock
        other.join(30)
        engine.dispose()
        assert len(mine) == 2
        assert set(theirs) == ids - mine

    def test_failures_back_off_then_fail_for_good(self, db):
        notification_id = self.record_one(db)
        now = NOW
        for attempt, delay in ((1, 0.5), (2, 1.0)):
            with db.begin() as session:
                assert repo.mark_failed(session, notification_id, "SMTP down", now, 3, 0.5) == "pending"
            row = state_of(db, notification_id)
            assert row.attempts == attempt and row.last_error == "SMTP down"
            assert row.next_attempt_at == now + timedelta(seconds=delay)
        with db.begin() as session:
            assert repo.mark_failed(session, notification_id, "still down", now, 3, 0.5) == "failed"
        row = state_of(db, notification_id)
        assert (row.state, row.attempts, row.last_error) == ("failed", 3, "still down")
        with db.begin() as session:
            assert repo.mark_failed(session, notification_id, "late", now, 3, 0.5) is None, "only pending ones count"
            repo.mark_sent(session, [notification_id], now)
        assert state_of(db, notification_id).state == "failed"

    def test_resend_makes_failed_and_sent_mails_pending_again(self, db):
        notification_id = self.record_one(db)
        with db.begin() as session:
            repo.mark_failed(session, notification_id, "SMTP down", NOW, 1, 1)
        with db.begin() as session:
            notification, changed = repo.resend(session, notification_id, NOW)
        assert changed and (notification.state, notification.attempts, notification.last_error) == ("pending", 0, None)
        with db.begin() as session:
            assert repo.resend(session, notification_id, NOW)[1] is False, "pending: nothing to do"
            repo.mark_sent(session, [notification_id], NOW)
        row = state_of(db, notification_id)
        assert (row.state, row.attempts, row.sent_at) == ("sent", 1, NOW)
        with db.begin() as session:
            assert repo.resend(session, notification_id, NOW)[1] is True
        with db() as session, pytest.raises(NotificationNotFound):
            repo.resend(session, 999, NOW)

    def test_pages_filters_and_sizes(self, db):
        for n in range(3):
            mail = mails.certificate_issued_mail({**ISSUED, "code": f"{n}" * 32}, FILES, "", "en")
            repo.record(db, mail)
        repo.record(db, mails.status_changed_mail(CHANGE, {**STUDENT, "id": 8}, MAIL_FROM, "en"))
        with db() as session:
            first, cursor = repo.list_page(session, 7, None, 2, None)
            rest, end = repo.list_page(session, 7, None, 2, cursor)
            assert [n.id for n in first + rest] == [1, 2, 3, 4] and end is None
            assert [(a["filename"], a["size"]) for a in first[0].attachment_summaries] == [
                ("certificate.pdf", len(PDF)),
                ("certificate.jwt", len(JWT)),
            ]
            assert [n.id for n in repo.list_page(session, None, "sent", 10, None)[0]] == []
            assert repo.get(session, 4).attachment_summaries == []


# --- handlers and RPC through worker_factory ------------------------------


@pytest.fixture
def service(db):
    yield worker_factory(NotificationsService, db=db, settings=Settings(mail_from=MAIL_FROM))


def event(**changes) -> dict:
    return {**CHANGE, "occurred_at": NOW.isoformat(), **changes}


def delivered(*payloads: dict) -> list[Delivery]:
    """``payloads`` as a batched handler gets them: each a message of its own."""
    return [Delivery(payload, {"correlation_id": f"corr-message-{n}"}) for n, payload in enumerate(payloads)]


class TestService:
    def test_a_redelivered_status_event_records_one_mail(self, service, db):
        service.students.get_students.return_value = [STUDENT]
        for _ in range(3):
            service.handle_student_status_changed(delivered(event()))
        assert service.sender.wake.call_count == 1
        [item] = service.list_notifications()["items"]
        assert item["recipient"] == "joao@escola.example" and item["state"] == "pending"
        assert "body_text" not in item and "attachment" not in item
        assert service.get_notification(item["id"])["body_text"].startswith("Hello João Conceição")

    def test_a_batch_is_looked_up_once_and_mails_each_known_student(self, service):
        service.students.get_students.return_value = [STUDENT]  # student 8 was deleted since
        batch = {
            "changes": [
                event(),
                event(student_id=8, request_id="r-8"),
                event(to_status="suspended", version=3, request_id="r-3"),
            ]
        }
        service.handle_student_status_changed(delivered(batch))
        service.students.get_students.assert_called_once_with([STUDENT["id"], 8])
        items = service.list_notifications()["items"]
        assert [i["recipient"] for i in items] == ["joao@escola.example"] * 2
        bodies = [service.get_notification(i["id"])["body_text"] for i in items]
        assert "completed" in bodies[0] and "suspended" in bodies[1]
        assert service.sender.wake.call_count == 1

    def test_messages_waiting_together_are_looked_up_and_recorded_together_each_with_its_own_id(
        self, service, monkeypatch
    ):
        ana = {**STUDENT, "id": 9, "name": "Ana", "email": "ana@escola.example"}
        service.students.get_students.return_value = [STUDENT, ana]
        messages = delivered(
            event(),  # a message of one change, without its own correlation id
            {"changes": [event(student_id=9, request_id="r-9", correlation_id="corr-own")]},
            event(student_id=9, request_id="r-10", to_status="suspended", version=3),
        )
        service.handle_student_status_changed(messages)
        service.students.get_students.assert_called_once_with([7, 9])
        assert service.sender.wake.call_count == 1
        items = service.list_notifications()["items"]
        assert {(i["recipient"], i["correlation_id"]) for i in items} == {
            ("joao@escola.example", "corr-message-0"),
            ("ana@escola.example", "corr-own"),
            ("ana@escola.example", "corr-message-2"),
        }

        monkeypatch.setattr(notifications, "CHANGES_A_ROUND", 2)  # a round's lookup is bounded
        service.students.get_students.reset_mock()
        service.handle_student_status_changed(messages)  # handled again (a batch retried one by one, say)
        assert [c.args for c in service.students.get_students.call_args_list] == [([7, 9],), ([9],)]
        assert len(service.list_notifications()["items"]) == 3, "no mail recorded twice"

    def test_nobody_to_notify_records_nothing(self, service):
        service.students.get_students.return_value = []  # deleted since
        service.handle_student_status_changed(delivered({"changes": [event()]}))
        assert service.list_notifications()["items"] == [] and not service.sender.wake.called

    def test_an_invalid_event_fails_validation(self, service):
        with pytest.raises(ValidationFailed):
            service.handle_student_status_changed(delivered({"student_id": "seven"}))
        with pytest.raises(ValidationFailed):
            service.handle_student_status_changed(delivered({"changes": [event(), {"student_id": 7}]}))
        with pytest.raises(ValidationFailed):
            service.handle_certificate_issued({"code": "x"})

    def test_a_redelivered_certificate_event_fetches_the_pdf_once(self, service):
        document = {"filename": "c.pdf", "content_type": "application/pdf", "data": base64.b64encode(PDF).decode()}
        credential = {"jwt": JWT, "credential": {}, "filename": "c.jwt", "media_type": "application/vc+jwt"}
        service.certificates.get_certificate_files.return_value = {"pdf": document, "credential": credential}
        payload = {**ISSUED, "issued_at": NOW.isoformat(), "status": "valid", "revoked_at": None}
        for _ in range(2):
            service.handle_certificate_issued(payload)
        service.certificates.get_certificate_files.assert_called_once_with("c" * 32)
        [item] = service.list_notifications(student_id=7)["items"]
        assert item["attachments"] == [
            {"filename": "c.pdf", "content_type": "application/pdf", "size": len(PDF)},
            {"filename": "c.jwt", "content_type": "application/vc+jwt", "size": len(JWT)},
        ]

    @pytest.mark.parametrize(
        ("answer", "attached"),
        [
            (None, []),
            ({}, []),
            ({"pdf": {"filename": "c.pdf", "data": "not base64!"}, "credential": None}, []),
            ({"credential": {"jwt": JWT, "filename": "c.jwt", "media_type": "application/vc+jwt"}}, ["c.jwt"]),
            ({"pdf": {"filename": "c.pdf", "content_type": "application/pdf", "data": ""}}, ["c.pdf"]),
        ],
    )
    def test_a_certificate_mail_carries_the_files_that_could_be_read(self, service, answer, attached):
        """What certificates answered and is unreadable is left out; the mail still has its links."""
        service.certificates.get_certificate_files.return_value = answer
        service.handle_certificate_issued({**ISSUED, "issued_at": NOW.isoformat()})
        [item] = service.list_notifications()["items"]
        assert [a["filename"] for a in item["attachments"]] == attached
        assert ISSUED["verification_url"] in service.get_notification(item["id"])["body_text"]

    def test_a_status_mail_is_in_the_student_s_language_or_the_default(self, db):
        service = worker_factory(
            NotificationsService, db=db, settings=Settings(mail_from=MAIL_FROM, default_language="pt_BR")
        )
        service.students.get_students.return_value = [
            {**STUDENT, "language": "en"},
            {**STUDENT, "id": 8, "email": "bia@escola.example", "language": None},
        ]
        service.handle_student_status_changed(delivered({"changes": [event(), event(student_id=8, request_id="r-8")]}))
        subjects = {i["recipient"]: i["subject"] for i in service.list_notifications()["items"]}
        assert subjects == {
            "joao@escola.example": "João Conceição, your status in Física Nuclear is now completed",
            "bia@escola.example": "João Conceição, seu status no curso Física Nuclear agora é concluído",
        }

    @pytest.mark.parametrize(
        ("language", "default", "subject"),
        [
            ("pt_BR", "en", "João Conceição, seu certificado do curso Física Nuclear está pronto"),
            ("pt-BR", "en", "João Conceição, seu certificado do curso Física Nuclear está pronto"),
            (None, "pt_BR", "João Conceição, seu certificado do curso Física Nuclear está pronto"),
            ("fr", "en", "João Conceição, your certificate for Física Nuclear is ready"),
            ("en", "pt_BR", "João Conceição, your certificate for Física Nuclear is ready"),
        ],
    )
    def test_a_certificate_mail_is_in_the_certificate_s_language_or_the_default(self, db, language, default, subject):
        service = worker_factory(
            NotificationsService, db=db, settings=Settings(mail_from=MAIL_FROM, default_language=default)
        )
        service.certificates.get_certificate_files.side_effect = CertificateNotFound("gone")
        service.handle_certificate_issued({**ISSUED, "issued_at": NOW.isoformat(), "language": language})
        [item] = service.list_notifications()["items"]
        assert item["subject"] == subject

    def test_resend_wakes_the_sender_and_bad_ids_are_typed_errors(self, service, db):
        service.students.get_students.return_value = [STUDENT]
        service.handle_student_status_changed(delivered(event()))
        service.sender = MagicMock()
        with db.begin() as session:
            repo.mark_failed(session, 1, "SMTP down", NOW, 1, 1)
        resent = service.resend_notification(1)
        assert resent["state"] == "pending" and resent["attempts"] == 0 and service.sender.wake.called
        with pytest.raises(NotificationNotFound):
            service.get_notification(99)
        for bad in ({"notification_id": 0}, {"notification_id": "1"}):
            with pytest.raises(ValidationFailed):
                service.resend_notification(**bad)
        for bad in ({"state": "lost"}, {"limit": 0}, {"student_id": "7"}, {"cursor": "nope"}):
            with pytest.raises(ValidationFailed):
                service.list_notifications(**bad)


# --- the sender -------------------------------------------------------------


class RecordingTransport:
    """Takes every mail but those whose Message-ID is in ``refuse``; after ``stop_after`` mails it
    stops ``sender`` (as a SIGTERM would, between two mails)."""

    def __init__(self, refuse: set[str] = frozenset(), stop_after: int | None = None):
        self.refuse, self.stop_after = refuse, stop_after
        self.sender: sender.MailSender | None = None
        self.sent: list[str] = []
        self.closes = 0

    def describe(self) -> str:
        return "recording"

    def send(self, message: transport.Composed) -> None:
        if message.message_id in self.refuse:
            raise smtplib.SMTPRecipientsRefused({message.recipient: (550, b"no such mailbox")})
        self.sent.append(message.message_id)
        if self.stop_after is not None and len(self.sent) == self.stop_after:
            self.sender.running = False

    def close(self) -> None:
        self.closes += 1


def a_sender(db, transport: RecordingTransport, batch_size: int = 4) -> sender.MailSender:
    """A MailSender on ``db`` and ``transport``, as its container would set it up and start it."""
    loop = sender.MailSender(batch_size=batch_size)
    loop.settings = Settings(mail_from=MAIL_FROM, mail_max_attempts=3, mail_retry_base_delay=60)
    loop.transports, transport.sender = [transport], loop
    loop.lease = timedelta(seconds=60)
    loop.Session = db
    loop.running = True
    return loop


def record_mails(db, count: int) -> list[str]:
    """``count`` pending mails; their Message-IDs, oldest first."""
    mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
    ids = [f"<{n}@escola.example>" for n in range(count)]
    for n, message_id in enumerate(ids):
        assert repo.record(db, dataclasses.replace(mail, dedup_key=f"{mail.dedup_key}-{n}", message_id=message_id))
    return ids


def states(db) -> dict[str, tuple[str, int]]:
    with db() as session:
        return {row.message_id: (row.state, row.attempts) for row in session.scalars(select(Notification))}


class TestSender:
    def test_full_batches_share_one_connection_and_each_batch_is_recorded_once_sent(self, db):
        ids = record_mails(db, 6)
        transport = RecordingTransport(refuse={ids[1]})
        loop = a_sender(db, transport)
        assert loop.step() is True, "a full batch: more may be waiting"
        assert transport.sent == [ids[0], ids[2], ids[3]] and transport.closes == 0, "kept open for the next"
        recorded = states(db)
        assert [recorded[i] for i in ids[:4]] == [("sent", 1), ("pending", 1), ("sent", 1), ("sent", 1)]
        assert loop.step() is False, "the last two: nothing more"
        assert transport.sent == [ids[0], ids[2], ids[3], ids[4], ids[5]] and transport.closes == 1
        assert [states(db)[i] for i in ids[4:]] == [("sent", 1), ("sent", 1)]

    def test_a_stop_between_mails_records_those_sent_and_gives_the_rest_back(self, db):
        ids = record_mails(db, 4)
        transport = RecordingTransport(stop_after=2)
        loop = a_sender(db, transport)
        assert loop.step() is False
        assert transport.sent == ids[:2] and transport.closes == 1
        recorded = states(db)
        assert [recorded[i] for i in ids] == [("sent", 1), ("sent", 1), ("pending", 0), ("pending", 0)]
        with db.begin() as session:  # given back: due again at once, not after the lease
            assert [m.message_id for m in repo.claim_due(session, datetime.now(UTC), 10, loop.lease)] == ids[2:]

    def test_several_connections_each_take_whole_recipients_in_order(self, db):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        recipients = [f"student{n}@escola.example" for n in range(5)]
        order = [(recipient, k) for k in range(3) for recipient in recipients]  # recorded interleaved
        for n, (recipient, k) in enumerate(order):
            repo.record(
                db,
                dataclasses.replace(
                    mail, dedup_key=f"{mail.dedup_key}-{n}", message_id=f"<{recipient}-{k}>", recipient=recipient
                ),
            )
        transports = [RecordingTransport() for _ in range(3)]
        loop = a_sender(db, transports[0], batch_size=10)
        loop.transports = transports
        assert loop.step() is False, "15 of the 30 a round may claim: nothing more"

        by_connection = [transport.sent for transport in transports]
        assert sorted(m for sent in by_connection for m in sent) == sorted(f"<{r}-{k}>" for r, k in order), "once"
        assert all(by_connection), "every connection had a share"
        for recipient in recipients:
            [lane] = [sent for sent in by_connection if f"<{recipient}-0>" in sent]
            assert [m for m in lane if m.startswith(f"<{recipient}-")] == [f"<{recipient}-{k}>" for k in range(3)]
        assert set(states(db).values()) == {("sent", 1)}
        assert [transport.closes for transport in transports] == [1, 1, 1]

    def test_a_recipient_past_a_connection_s_share_waits_for_the_next_round(self, db):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        for n in range(5):  # five mails to one recipient, two connections of two mails a round
            repo.record(db, dataclasses.replace(mail, dedup_key=f"{mail.dedup_key}-{n}", message_id=f"<{n}@x>"))
        transports = [RecordingTransport(), RecordingTransport()]
        loop = a_sender(db, transports[0], batch_size=2)
        loop.transports = transports
        assert loop.step() is True, "the rest was given back: due at once"
        assert transports[0].sent == ["<0@x>", "<1@x>"] and transports[1].sent == []
        assert [states(db)[f"<{n}@x>"] for n in range(5)] == [("sent", 1)] * 2 + [("pending", 0)] * 3
        while loop.step():
            pass
        assert [m for t in transports for m in t.sent] == [f"<{n}@x>" for n in range(5)], "in order, once each"

    def test_a_failed_claim_leaves_no_connection_open_while_the_loop_backs_off(self, db, monkeypatch):
        ids = record_mails(db, 4)
        transport = RecordingTransport()
        loop = a_sender(db, transport)
        assert loop.step() is True and transport.sent == ids and transport.closes == 0

        def database_away(*args, **kwargs):
            raise OSError("database away")

        monkeypatch.setattr(repo, "claim_due", database_away)
        with pytest.raises(OSError):
            loop.step()
        assert transport.closes == 1
