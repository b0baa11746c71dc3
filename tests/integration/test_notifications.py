"""Notifications on a real broker, a real database and a real SMTP server.

The SMTP server is aiosmtpd in a child process (away from this process's
eventlet monkey-patching), on a free loopback port; it saves every message it
accepts as a file, so "the server is down" is simply "not started yet".

The certificates service is a stand-in here (``FakeCertificates``, a real nameko
service named ``certificates`` serving a small real PDF made with reportlab), so
these tests do not depend on how certificates are issued.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import eventlet
import pytest
from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import entrypoint_waiter
from nameko.testing.utils import get_container
from pypdf import PdfReader
from reportlab.pdfgen import canvas

from services.exceptions import NotificationNotFound
from services.notifications import NotificationsService
from services.students import StudentsService
from tests.integration.conftest import wait_for

MAIL_FROM = "Secretaria <secretaria@escola.example>"
BASE_URL = "https://escola.example"

SMTP_SERVER = """
import base64, json, os, sys, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, directory, smtputf8 = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "smtputf8"


class SaveToFiles:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if session.authenticated else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "data": base64.b64encode(envelope.original_content).decode(),
            "peer": list(session.peer),  # the client's end of the connection the mail came over
            "at": time.monotonic_ns(),
        }
        path = os.path.join(directory, uuid.uuid4().hex)
        with open(path + ".partial", "w") as handle:
            json.dump(record, handle)
        os.replace(path + ".partial", path + ".json")
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (auth_data.login, auth_data.password) == (b"mailer", b"secret")
    return AuthResult(success=ok, auth_data=auth_data)


controller = Controller(
    SaveToFiles(),
    hostname="127.0.0.1",
    port=port,
    authenticator=authenticate,
    auth_require_tls=False,
    enable_SMTPUTF8=smtputf8,
)
controller.start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
controller.stop()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpServer:
    """aiosmtpd on ``port`` in a child process; ``messages()`` are what it accepted."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self, smtputf8: bool = False) -> None:
        """Listening; offering SMTPUTF8 (RFC 6531) only if ``smtputf8``."""
        flag = "smtputf8" if smtputf8 else "ascii"
        self.process = subprocess.Popen(
            [sys.executable, "-c", SMTP_SERVER, str(self.port), str(self.directory), flag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        with eventlet.Timeout(10):
            assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def messages(self) -> list[dict]:
        """What the server accepted, in the order it accepted it."""
        received = []
        for path in self.directory.glob("*.json"):
            record = json.loads(path.read_text())
            record["message"] = parse(base64.b64decode(record["data"]))
            received.append(record)
        return sorted(received, key=lambda record: record["at"])


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def make_pdf(text: str) -> bytes:
    buffer = io.BytesIO()
    document = canvas.Canvas(buffer)
    document.drawString(72, 720, text)  # Helvetica covers Latin-1: "João Conceição" as written
    document.save()
    return buffer.getvalue()


PDF = make_pdf("Certificate: João Conceição, Física Nuclear")
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"  # what the certificates service signs
JWT_TYPE = "application/vc+jwt"


class FakeCertificates:
    """Stands in for the certificates service: only what notifications call."""

    name = "certificates"

    @rpc
    def get_certificate_files(self, code: str) -> dict:
        data = base64.b64encode(PDF).decode()
        return {
            "pdf": {"filename": f"certificate-{code}.pdf", "content_type": "application/pdf", "data": data},
            "credential": {"jwt": JWT, "credential": {}, "filename": f"certificate-{code}.jwt", "media_type": JWT_TYPE},
        }


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(tmp_path / "smtp")
    yield server
    server.stop()


@pytest.fixture
def mail_config(config, smtp, tmp_path) -> dict:
    return {
        **config,
        "PUBLIC_BASE_URL": BASE_URL,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp.port,
        "SMTP_STARTTLS": False,
        "SMTP_USERNAME": None,
        "SMTP_PASSWORD": None,
        "SMTP_TIMEOUT": 5,
        "MAIL_FROM": MAIL_FROM,
        "MAIL_DIR": str(tmp_path / "mail"),
        "MAIL_MAX_ATTEMPTS": 8,
        "MAIL_RETRY_BASE_DELAY": 0.2,
    }


@pytest.fixture
def proxy(config):
    with ClusterRpcProxy(config, timeout=10) as cluster:
        yield cluster


def status_changed(student: dict, to_status: str = "active") -> dict:
    return {
        "student_id": student["id"],
        "from_status": "enrolled",
        "to_status": to_status,
        "reason": "term starts",
        "actor": "registrar",
        "request_id": str(uuid.uuid4()),
        "version": 1,
        "occurred_at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC).isoformat(),
        "course": None,
    }


def certificate_issued(unique: str) -> dict:
    code = (unique * 4)[:32]
    return {
        "code": code,
        "student_id": 7,
        "student_name": "João Conceição",
        "student_email": f"joao.{unique}@escola.example",
        "course": "Física Nuclear",
        "issued_at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC).isoformat(),
        "verification_url": f"{BASE_URL}/certificates/{code}",
        "pdf_url": f"{BASE_URL}/certificates/{code}.pdf",
        "status": "valid",
    }


def only_notification(proxy, **filters) -> dict | None:
    items = proxy.notifications.list_notifications(**filters)["items"]
    assert len(items) <= 1, items
    return items[0] if items else None


def in_state(proxy, state: str, **filters) -> dict | None:
    item = only_notification(proxy, **filters)
    return item if item and item["state"] == state else None


def handled(times: int):
    """An ``entrypoint_waiter`` callback for a batched handler: done once ``times`` messages were
    handled (one worker may take several)."""
    results = []

    def callback(worker_ctx, result, exc_info) -> bool:
        if exc_info is None:
            results.extend(worker_ctx.args[0])
        return len(results) == times

    return callback


def still_one_message(smtp: SmtpServer) -> list[dict]:
    time.sleep(0.5)  # a duplicate would arrive within a few polls
    received = smtp.messages()
    assert len(received) == 1, [r["message"]["Subject"] for r in received]
    return received


def test_status_change_is_mailed_once_however_often_the_event_arrives(runner_factory, mail_config, smtp, proxy, unique):
    smtp.start()
    config = {**mail_config, "SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "secret"}
    runner = runner_factory(config, NotificationsService, StudentsService)
    runner.start()
    student = proxy.students.create_student(
        {"name": "João Conceição", "email": f"joao.{unique}@escola.example", "course": "Física Nuclear"}
    )

    payload = status_changed(student)
    dispatch = event_dispatcher(config)
    notifications = get_container(runner, NotificationsService)
    with entrypoint_waiter(notifications, "handle_student_status_changed", callback=handled(3), timeout=30):
        for _ in range(3):  # at-least-once delivery, at its worst
            dispatch("status", "student_status_changed", payload)

    # all three deliveries were handled: one notification, and once sent, one message
    sent = wait_for(lambda: in_state(proxy, "sent", student_id=student["id"]))
    [received] = still_one_message(smtp)
    assert received["rcpt_tos"] == [student["email"]] and received["mail_from"] == "secretaria@escola.example"
    assert received["login"] == "mailer", "logged in with SMTP_USERNAME / SMTP_PASSWORD"
    message = received["message"]
    assert message["To"] == student["email"] and message["From"] == MAIL_FROM
    assert message["Subject"] == "João Conceição, your status in Física Nuclear is now active"
    assert message["Message-ID"].strip() == sent["message_id"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hello João Conceição" in text and "from enrolled to active on March 1, 2026, 9:30\u202fAM UTC" in text
    assert "Reason: term starts" in text
    assert "<strong>Física Nuclear</strong>" in html and "<strong>active</strong>" in html

    assert (sent["attempts"], sent["last_error"], sent["kind"]) == (1, None, "student_status_changed")
    assert sent["sent_at"] and sent["recipient"] == student["email"]
    assert proxy.notifications.list_dead_letters() == []


def test_many_recipients_go_over_several_connections_each_recipient_in_order(
    runner_factory, mail_config, smtp, proxy, unique
):
    smtp.start()
    runner = runner_factory({**mail_config, "SMTP_CONNECTIONS": 3}, NotificationsService, StudentsService)
    runner.start()
    students = [
        proxy.students.create_student(
            {"name": f"Student {n}", "email": f"s{n}.{unique}@escola.example", "course": "Física"}
        )
        for n in range(8)
    ]
    steps = ("active", "suspended", "withdrawn")
    changes = [status_changed(student, step) for step in steps for student in students]  # one batch, interleaved
    notifications = get_container(runner, NotificationsService)
    with entrypoint_waiter(notifications, "handle_student_status_changed", timeout=30):
        event_dispatcher(mail_config)("status", "student_status_changed", {"changes": changes})

    wait_for(lambda: len(smtp.messages()) >= len(changes), timeout=30)
    time.sleep(0.5)  # a duplicate would arrive within a few polls
    received = smtp.messages()
    assert len(received) == len(changes), "each mail once"
    connections = {tuple(record["peer"]) for record in received}
    assert len(connections) > 1, "sent over several connections at once"
    for student in students:
        own = [record for record in received if record["rcpt_tos"] == [student["email"]]]
        assert [record["message"]["Subject"].rsplit(" ", 1)[-1] for record in own] == list(steps), "in order"
        assert len({tuple(record["peer"]) for record in own}) == 1, "a recipient's mails keep to one connection"


def test_an_address_not_in_ascii_waits_for_a_server_with_smtputf8_then_goes_once(
    runner_factory, mail_config, smtp, proxy, unique
):
    smtp.start(smtputf8=False)
    runner = runner_factory(mail_config, NotificationsService, StudentsService)
    runner.start()
    student = proxy.students.create_student(
        {"name": "João Conceição", "email": f"joão.{unique}@escola.example", "course": "Física Nuclear"}
    )
    event_dispatcher(mail_config)("status", "student_status_changed", status_changed(student))

    refused = wait_for(lambda: _retried(proxy, student["id"]), timeout=30)
    assert refused["state"] == "pending" and refused["last_error"].startswith("SmtpUtf8NotSupported: ")
    assert smtp.messages() == [], "refused by a server without SMTPUTF8, kept to retry"

    smtp.stop()
    smtp.start(smtputf8=True)
    sent = wait_for(lambda: in_state(proxy, "sent", student_id=student["id"]), timeout=30)
    [received] = still_one_message(smtp)
    assert received["rcpt_tos"] == [student["email"]] and received["mail_from"] == "secretaria@escola.example"
    message = received["message"]
    assert message["To"] == student["email"] and message["Message-ID"].strip() == sent["message_id"]
    assert "Hello João Conceição" in message.get_body(("plain",)).get_content()


def _retried(proxy, student_id: int) -> dict | None:
    item = only_notification(proxy, student_id=student_id)
    return item if item and item["attempts"] >= 1 and item["last_error"] else None


def test_certificate_mail_carries_the_link_and_the_pdf(runner_factory, mail_config, smtp, proxy, unique):
    smtp.start()
    runner_factory(mail_config, NotificationsService, FakeCertificates).start()
    payload = certificate_issued(unique)
    event_dispatcher(mail_config)("certificates", "certificate_issued", payload)

    sent = wait_for(lambda: in_state(proxy, "sent", student_id=7))
    [received] = smtp.messages()
    message = received["message"]
    assert received["rcpt_tos"] == [payload["student_email"]]
    assert message["Subject"] == "João Conceição, your certificate for Física Nuclear is ready"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert payload["verification_url"] in text and "attached to this e-mail as a PDF" in text
    assert f'<a href="{payload["verification_url"]}">' in html

    [attachment, credential] = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"certificate-{payload['code']}.pdf"
    assert attachment.get_content() == PDF
    assert "João Conceição" in PdfReader(io.BytesIO(attachment.get_content())).pages[0].extract_text()
    assert credential.get_content_type() == "application/vc+jwt"
    assert credential.get_filename() == f"certificate-{payload['code']}.jwt"
    assert credential.get_payload(decode=True) == JWT.encode()
    assert sent["attachments"] == [
        {"filename": attachment.get_filename(), "content_type": "application/pdf", "size": len(PDF)},
        {"filename": credential.get_filename(), "content_type": "application/vc+jwt", "size": len(JWT)},
    ]
    assert "body_text" not in sent and "data" not in str(sent["attachments"])

    detail = proxy.notifications.get_notification(sent["id"])
    assert detail["body_text"] == text.replace("\r\n", "\n") and "attachment" not in detail
    with pytest.raises(NotificationNotFound):
        proxy.notifications.get_notification(sent["id"] + 1000)


def test_smtp_down_then_up_delivers_exactly_once(runner_factory, mail_config, smtp, proxy, unique):
    runner_factory(mail_config, NotificationsService, FakeCertificates).start()  # no SMTP server yet
    event_dispatcher(mail_config)("certificates", "certificate_issued", certificate_issued(unique))

    retrying = wait_for(lambda: (n := only_notification(proxy)) and n["attempts"] >= 2 and n)
    assert retrying["state"] == "pending" and retrying["last_error"].startswith("ConnectionRefusedError")
    assert proxy.notifications.ping() == {"service": "notifications", "ok": True}, "mail trouble stays in mail"

    smtp.start()
    # the next attempt comes after the current backoff (up to 12.8 s after the 7th of 8)
    sent = wait_for(lambda: in_state(proxy, "sent"), timeout=30)
    still_one_message(smtp)
    assert sent["attempts"] > 2 and sent["last_error"] is None


def test_failed_after_the_last_attempt_then_resent_once(runner_factory, mail_config, smtp, proxy, unique):
    config = {**mail_config, "MAIL_MAX_ATTEMPTS": 3, "MAIL_RETRY_BASE_DELAY": 0.1}
    runner_factory(config, NotificationsService, FakeCertificates).start()
    event_dispatcher(config)("certificates", "certificate_issued", certificate_issued(unique))

    failed = wait_for(lambda: in_state(proxy, "failed"))
    assert failed["attempts"] == 3 and failed["last_error"].startswith("ConnectionRefusedError")

    smtp.start()
    time.sleep(0.5)
    assert smtp.messages() == [] and only_notification(proxy)["state"] == "failed", "failed stays failed"

    resent = proxy.notifications.resend_notification(failed["id"])
    assert (resent["state"], resent["attempts"], resent["last_error"]) == ("pending", 0, None)
    sent = wait_for(lambda: in_state(proxy, "sent"))
    assert sent["attempts"] == 1
    [received] = still_one_message(smtp)
    assert received["message"]["Message-ID"].strip() == failed["message_id"]


def test_mail_goes_out_after_the_service_was_down_while_events_were_published(
    container_factory, mail_config, smtp, proxy, unique
):
    smtp.start()
    container_factory(StudentsService, mail_config).start()
    notifications = container_factory(NotificationsService, mail_config)
    notifications.start()  # declares its durable queues
    notifications.stop()

    student = proxy.students.create_student(
        {"name": "Zoë Ærøskøbing", "email": f"zoe.{unique}@escola.example", "course": "Música"}
    )
    event_dispatcher(mail_config)("status", "student_status_changed", status_changed(student, "withdrawn"))
    time.sleep(0.3)
    assert smtp.messages() == []

    container_factory(NotificationsService, mail_config).start()
    wait_for(smtp.messages)
    [received] = still_one_message(smtp)
    assert received["message"]["Subject"] == "Zoë Ærøskøbing, your status in Música is now withdrawn"
    assert wait_for(lambda: in_state(proxy, "sent", student_id=student["id"]))


def test_without_an_smtp_host_mail_is_written_to_mail_dir(runner_factory, mail_config, proxy, tmp_path, unique):
    mail_dir = tmp_path / "outbox" / "mail"  # created by the service
    config = {**mail_config, "SMTP_HOST": None, "MAIL_DIR": str(mail_dir)}
    runner_factory(config, NotificationsService, FakeCertificates).start()
    payload = certificate_issued(unique)
    event_dispatcher(config)("certificates", "certificate_issued", payload)

    sent = wait_for(lambda: in_state(proxy, "sent"))
    [path] = mail_dir.glob("*.eml")
    message = parse(path.read_bytes())
    assert message["From"] == MAIL_FROM and message["To"] == payload["student_email"]
    assert message["Subject"] == "João Conceição, your certificate for Física Nuclear is ready"
    assert message["Message-ID"].strip() == sent["message_id"] and message["Date"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert payload["verification_url"] in message.get_body(("plain",)).get_content()
    assert [a.get_filename() for a in message.iter_attachments()] == [
        f"certificate-{payload['code']}.pdf",
        f"certificate-{payload['code']}.jwt",
    ]

    # the log: filters, pages
    assert proxy.notifications.list_notifications(state="failed") == {"items": [], "next_cursor": None}
    event_dispatcher(config)("certificates", "certificate_issued", certificate_issued(unique[::-1]))
    wait_for(lambda: len(proxy.notifications.list_notifications(state="sent")["items"]) == 2)
    first = proxy.notifications.list_notifications(limit=1)
    second = proxy.notifications.list_notifications(limit=1, cursor=first["next_cursor"])
    assert first["items"][0]["id"] < second["items"][0]["id"] and second["next_cursor"] is None
    assert len(list(mail_dir.glob("*.eml"))) == 2


def decoded(received: dict) -> tuple[str, str, str, str]:
    """What a mail client shows of a message the SMTP server accepted: recipient, subject, text, HTML."""
    message = received["message"]
    text, html = (message.get_body((kind,)).get_content() for kind in ("plain", "html"))
    return message["To"], message["Subject"], text, html


@pytest.mark.parametrize(("default", "other"), [("en", "pt_BR"), ("pt_BR", "en")])
def test_a_status_mail_is_in_the_student_s_language_else_in_the_default(
    runner_factory, mail_config, smtp, proxy, unique, default, other
):
    smtp.start()
    config = {**mail_config, "DEFAULT_LANGUAGE": default}
    runner_factory(config, NotificationsService, StudentsService).start()
    chosen = proxy.students.create_student(
        {"name": "João Conceição", "email": f"joao.{unique}@escola.example", "course": "Física", "language": other}
    )
    unset = proxy.students.create_student(
        {"name": "Zoë Ærøskøbing", "email": f"zoe.{unique}@escola.example", "course": "Música"}
    )
    dispatch = event_dispatcher(config)
    dispatch("status", "student_status_changed", status_changed(chosen))
    dispatch("status", "student_status_changed", status_changed(unset, "withdrawn"))

    received = wait_for(lambda: len(smtp.messages()) == 2 and smtp.messages())
    mails = {to: (subject, text, html) for to, subject, text, html in map(decoded, received)}
    languages = {chosen["email"]: other, unset["email"]: default}
    expected = {
        "en": {
            chosen["email"]: (
                "João Conceição, your status in Física is now active",
                "Your status in Física changed from enrolled to active on March 1, 2026, 9:30\u202fAM UTC.",
                "Reason: term starts",
            ),
            unset["email"]: (
                "Zoë Ærøskøbing, your status in Música is now withdrawn",
                "Your status in Música changed from enrolled to withdrawn on March 1, 2026, 9:30\u202fAM UTC.",
                "If you did not expect this, please contact your school.",
            ),
        },
        "pt_BR": {
            chosen["email"]: (
                "João Conceição, seu status no curso Física agora é ativo",
                "Seu status no curso Física mudou de matriculado para ativo em 1 de março de 2026 09:30 UTC.",
                "Motivo: term starts",
            ),
            unset["email"]: (
                "Zoë Ærøskøbing, seu status no curso Música agora é desligado",
                "Seu status no curso Música mudou de matriculado para desligado em 1 de março de 2026 09:30 UTC.",
                "Se você não esperava por isso, entre em contato com a sua escola.",
            ),
        },
    }
    for address, language in languages.items():
        subject, sentence, last = expected[language][address]
        text_subject, text, html = mails[address]
        assert text_subject == subject
        assert sentence in text and last in text
        assert f'<html lang="{language.replace("_", "-")}">' in html and last in html
        greeting = "Olá" if language == "pt_BR" else "Hello"
        assert text.startswith(greeting) and f"<p>{greeting}" in html


@pytest.mark.parametrize(
    ("language", "subject", "sentence"),
    [
        (
            "pt_BR",
            "João Conceição, seu certificado do curso Física Nuclear está pronto",
            "Parabéns por concluir o curso Física Nuclear! Seu certificado foi emitido em 1 de março de 2026.",
        ),
        (
            None,
            "João Conceição, your certificate for Física Nuclear is ready",
            "Congratulations on completing Física Nuclear! Your certificate was issued on March 1, 2026.",
        ),
    ],
)
def test_a_certificate_mail_is_in_the_certificate_s_language_else_in_the_default(
    runner_factory, mail_config, smtp, proxy, unique, language, subject, sentence
):
    smtp.start()
    runner_factory(mail_config, NotificationsService, FakeCertificates).start()
    payload = {**certificate_issued(unique), **({"language": language} if language else {})}
    event_dispatcher(mail_config)("certificates", "certificate_issued", payload)

    wait_for(lambda: in_state(proxy, "sent"))
    [received] = smtp.messages()
    _, received_subject, text, html = decoded(received)
    assert received_subject == subject and sentence in text
    assert f'<html lang="{"pt-BR" if language else "en"}">' in html
    assert [a.get_filename() for a in received["message"].iter_attachments()] == [
        f"certificate-{payload['code']}.pdf",
        f"certificate-{payload['code']}.jwt",
    ]
