"""Log lines: config.yaml's LOGGING block as the processes use it (plain and JSON), the context
every record carries, and the redaction that keeps secrets and mail bodies out of every line."""

from __future__ import annotations

import email.message
import io
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nameko.testing.services import dummy, entrypoint_hook

from services._notifications.mail import Outgoing
from services.exceptions import StudentNotFound
from services.infra import logs
from services.infra.config import load_config
from services.infra.correlation import Correlation, working_on
from services.infra.settings import ConfigError, Settings

API_KEY = "msk_0123456789ab_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef_Zz9Zz9"
PASSWORD = "hunter2-s3cret"

log = logging.getLogger("tests.unit.logs")


class Lines:
    """What one console handler built from config.yaml's LOGGING block wrote."""

    def __init__(self, stream: io.StringIO):
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]


def console(log_format: str, monkeypatch, loggers: tuple[str, ...]) -> Iterator[Lines]:
    """The ``console`` handler of config.yaml's LOGGING block with ``LOG_FORMAT=log_format``,
    attached to ``loggers`` (not to the root: pytest's own handlers stay as they are)."""
    monkeypatch.setenv("LOG_FORMAT", log_format)
    block = load_config()["LOGGING"]
    spec = block["handlers"]["console"]
    configurator = logging.config.DictConfigurator(block)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(configurator.configure_formatter(configurator.config["formatters"][spec["formatter"]]))
    for name in spec["filters"]:
        handler.addFilter(configurator.configure_filter(configurator.config["filters"][name]))
    targets = [logging.getLogger(name) for name in loggers]
    saved = [(target.level, target.propagate) for target in targets]
    for target in targets:
        target.addHandler(handler)
        target.setLevel(logging.DEBUG)
        target.propagate = False
    try:
        yield Lines(stream)
    finally:
        for target, (level, propagate) in zip(targets, saved, strict=True):
            target.removeHandler(handler)
            target.setLevel(level)
            target.propagate = propagate


@pytest.fixture
def json_lines(monkeypatch) -> Iterator[Lines]:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)  # read when the redaction filter is made
    yield from console("json", monkeypatch, (log.name, logs.worker_log.name))


@pytest.fixture
def plain_lines(monkeypatch) -> Iterator[Lines]:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    yield from console("plain", monkeypatch, (log.name, logs.worker_log.name))


# --- the format ----------------------------------------------------------------------------


def test_a_json_line_has_every_field(json_lines):
    with working_on("cid-1", "rpc x.y"):
        log.info("changed %s", "ana", extra={"student_id": 7, "request_id": "r-1", "job_id": 3, "duration_ms": 12.5})
    (line,) = json_lines.json()
    assert {key: line[key] for key in line if key != "time"} == {
        "level": "INFO",
        "logger": "tests.unit.logs",
        "message": "changed ana",
        "service": logs.service(),
        "correlation_id": "cid-1",
        "entrypoint": "rpc x.y",
        "student_id": 7,
        "request_id": "r-1",
        "job_id": 3,
        "duration_ms": 12.5,
    }
    assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0


def test_a_json_line_names_the_span_it_was_logged_in_while_traces_are_on(json_lines, spans):
    from services.infra import tracing

    with tracing.span("work") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = json_lines.json()
    context = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_json_line_outside_any_request_has_a_null_correlation_id(json_lines):
    log.warning("idle")
    (line,) = json_lines.json()
    assert line["correlation_id"] is None
    assert "entrypoint" not in line and "student_id" not in line
    assert (line["level"], line["message"]) == ("WARNING", "idle")


def test_every_json_line_is_one_line_even_with_a_traceback(json_lines):
    try:
        raise RuntimeError("broken\nacross lines")
    except RuntimeError:
        log.exception("failed")
    (line,) = json_lines.json()
    assert json_lines.text.count("\n") == 1
    assert "RuntimeError: broken" in line["exception"] and "Traceback" in line["exception"]


def test_plain_lines_end_with_the_correlation_id(plain_lines):
    log.info("before")
    with working_on("cid-2", "event status.student_status_changed"):
        log.info("during")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    lines = plain_lines.text.splitlines()
    assert lines[0].endswith(" INFO tests.unit.logs: before")
    assert lines[1].endswith(" INFO tests.unit.logs: during [cid=cid-2]")
    assert lines[2].endswith(" ERROR tests.unit.logs: failed [cid=cid-2]")
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


def test_a_deliberate_error_stays_one_line(plain_lines):
    try:
        raise StudentNotFound("No student 5.", {"student_id": 5})
    except StudentNotFound:
        log.exception("error handling worker")
    assert plain_lines.text.splitlines() == [plain_lines.text.strip()]
    assert "INFO tests.unit.logs: error handling worker [STUDENT_NOT_FOUND]" in plain_lines.text


def test_log_format_is_plain_or_json():
    assert Settings().log_format == "plain"
    assert Settings.from_config({"LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="config: LOG_FORMAT must be plain or json, got 'xml'"):
        Settings.from_config({"LOG_FORMAT": "xml"})


# --- a worker's context ------------------------------------------------------------------------


class ProbeService:
    name = "probe"

    correlation = Correlation()
    log_context = logs.LogContext()

    @dummy
    def get_job(self, student_id, job_id=None, payload=None):
        log.info("working")
        return "ok"

    @dummy
    def fail(self):
        raise StudentNotFound("No such student.", {})


def test_a_worker_names_its_service_ids_and_duration(json_lines, container_factory):
    container = container_factory(ProbeService, {})
    container.start()
    with entrypoint_hook(container, "get_job", context_data={"correlation_id": "cid-3"}) as get_job:
        assert get_job(5, job_id=9) == "ok"
    working, done = json_lines.json()
    assert working["service"] == done["service"] == "probe"
    assert working["correlation_id"] == done["correlation_id"] == "cid-3"
    assert working["entrypoint"] == "entrypoint probe.get_job"
    assert (working["student_id"], working["job_id"]) == (5, 9)
    assert done["logger"] == "mensageria.worker"
    assert done["message"].startswith("entrypoint probe.get_job: done in ")
    assert isinstance(done["duration_ms"], float) and done["duration_ms"] >= 0
    assert "probe" in logs.service().split(",")  # outside its workers too: the process serves it


def test_a_worker_finds_the_id_of_a_payload_of_one(json_lines, container_factory):
    container = container_factory(ProbeService, {})
    container.start()
    with entrypoint_hook(container, "get_job") as get_job:
        get_job(None, payload={"changes": [{"student_id": 11, "request_id": "r-11"}]})
        get_job(None, payload={"changes": [{"student_id": 1}, {"student_id": 2}]})
    one, _, many, _ = json_lines.json()
    assert (one["student_id"], one["request_id"]) == (11, "r-11")
    assert "student_id" not in many


def test_a_failed_worker_says_with_what(json_lines, container_factory):
    container = container_factory(ProbeService, {})
    container.start()
    with entrypoint_hook(container, "fail") as fail, pytest.raises(StudentNotFound):
        fail()
    done = next(line for line in json_lines.json() if line["logger"] == "mensageria.worker")
    assert done["error"] == "StudentNotFound"
    assert done["message"].startswith("entrypoint probe.fail: StudentNotFound in ")


@pytest.mark.parametrize(
    ("result", "status"),
    [((202, "{}"), 202), ("text", None), (None, None), (type("R", (), {"status_code": 404})(), 404)],
)
def test_http_status_of_a_result(result, status):
    assert logs.http_status(result) == status


# --- redaction ---------------------------------------------------------------------------------


def mail_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["Subject"], message["Message-ID"] = "Your certificate", "<m-1@mensageria.local>"
    message.set_content("Dear Ana, your private certificate body")
    return message


def outgoing() -> Outgoing:
    return Outgoing(
        id=1,
        recipient="ana@example.org",
        subject="Your certificate",
        body_text="Dear Ana, your private certificate body",
        body_html="<html><body>Dear Ana, your private certificate body</body></html>",
        attachments=(),
        message_id="<m-1@mensageria.local>",
        created_at=datetime(2026, 1, 1),
        attempts=0,
    )


SECRETS = (API_KEY, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef", PASSWORD, "private certificate body", "guestpass")

LEAKS = [
    pytest.param(("key %s", API_KEY), {}, id="api key as an argument"),
    pytest.param((f"key {API_KEY} refused",), {}, id="api key in the message"),
    pytest.param(("key %s", API_KEY[:30]), {}, id="part of an api key"),
    pytest.param(("headers %r", {"Authorization": f"Bearer {API_KEY}"}), {}, id="authorization in a dict"),
    pytest.param(("headers %r", [("Authorization", f"Basic {PASSWORD}")]), {}, id="authorization in a tuple"),
    pytest.param((f"Authorization: Bearer {API_KEY[:20]}",), {}, id="authorization header line"),
    pytest.param(("broker %s down", "amqp://mensageria:guestpass@rabbit:5672/vhost"), {}, id="amqp uri"),
    pytest.param(("login with password=%s", PASSWORD), {}, id="password="),
    pytest.param(("settings %r", Settings(smtp_password=PASSWORD)), {}, id="settings repr"),
    pytest.param(("smtp said %s", f"535 auth failed for {PASSWORD}"), {}, id="SMTP_PASSWORD's value"),
    pytest.param(("sending %s", mail_message()), {}, id="a mail as an argument"),
    pytest.param(("sending %s", mail_message().as_string()), {}, id="a mail as text"),
    pytest.param(("sending %r", mail_message().as_bytes()), {}, id="a mail as bytes"),
    pytest.param(("sending %r", outgoing()), {}, id="a recorded mail"),
    pytest.param(("html %s", outgoing().body_html), {}, id="an html body"),
    pytest.param(("failed",), {"extra": {"details": {"key": API_KEY}}}, id="extra field"),
    pytest.param(("%d broken %s", "x", API_KEY), {}, id="arguments that do not fit"),
]


def _raise_and_log(args: tuple, kwargs: dict) -> None:
    try:
        raise ConnectionError(f"amqp://mensageria:guestpass@rabbit:5672/ refused {API_KEY}")
    except ConnectionError:
        log.exception(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs"), LEAKS)
@pytest.mark.parametrize("lines", ["plain_lines", "json_lines"])
def test_no_secret_reaches_a_line(lines, args, kwargs, request):
    output = request.getfixturevalue(lines)
    log.warning(*args, **kwargs)
    _raise_and_log(args, kwargs)
    text = output.text
    assert text.count("\n") >= 2, text
    assert [secret for secret in SECRETS if secret in text] == [], text
    assert logs.REDACTED in text or "<mail <m-1@mensageria.local>>" in text, text


@pytest.mark.parametrize("lines", ["plain_lines", "json_lines"])
def test_a_key_sent_as_the_correlation_id_is_cut_out_too(lines, request):
    output = request.getfixturevalue(lines)
    with working_on(API_KEY):
        log.info("hello")
    assert "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef" not in output.text
    assert "msk_0123456789ab_[redacted]" in output.text


def test_redaction_keeps_what_is_not_secret():
    assert logs.redact("notification 12 sent to ana@example.org") == "notification 12 sent to ana@example.org"
    assert logs.redact("broker amqp://guest:***@localhost:5672/ not reachable") == (
        "broker amqp://guest:[redacted]@localhost:5672/ not reachable"
    )
    assert logs.redact(f"key {API_KEY}") == "key msk_0123456789ab_[redacted]"  # the id names the key
    assert logs.redact("no Authorization header") == "no Authorization header"


@pytest.mark.parametrize(("args", "kwargs"), LEAKS)
def test_redaction_is_idempotent(args, kwargs):
    """A record that passes two handlers is redacted twice, and reads the same."""
    record = logging.LogRecord(log.name, logging.INFO, __file__, 0, args[0], args[1:], None)
    redaction = logs.Redaction()
    redaction.filter(record)
    once = record.getMessage()
    redaction.filter(record)
    assert record.getMessage() == once


def test_secrets_come_from_the_variables_that_name_one():
    environ = {
        "SMTP_PASSWORD": "p4ssword",
        "API_KEY_SECRET": "k3y-secret",
        "RABBITMQ_DEFAULT_PASS": "guestpass",
        "MENSAGERIA_KEY": API_KEY,
        "SMTP_HOST": "mail.example.org",
        "SHORT_PASSWORD": "abc",
    }
    assert sorted(logs.environment_secrets(environ)) == sorted([API_KEY, "guestpass", "k3y-secret", "p4ssword"])


# pieces of the words the check looks for, whole words in other cases, and letters whose case folds oddly
# (LONG S and KELVIN SIGN fold to "s" and "k", DOTTED and DOTLESS I do not fold to "i" for the regex)
_PIECES = ["ms", "k_", "author", "IZATION", "Bear", "er", "basic", "://", "pa", "ss", "SECRET", "tok", "en", "bo", "dy"]
_PIECES += ["<HTML", "mime-", "-Encoding", " ", "x", "\u017f", "\u212a", "\u0130", "\u0131", "\u00e9", "\n"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_the_quick_suspect_check_agrees_with_the_regex(text):
    """ASCII text is searched lowered, word by word; other text by the case-insensitive regex."""
    assert logs.suspect(text) == (logs._SUSPECT.search(text) is not None)
    assert logs.suspect(text.upper()) == (logs._SUSPECT.search(text.upper()) is not None)


def test_the_quick_suspect_check_finds_each_word_in_any_case():
    for word in logs._SUSPECT_WORDS:
        for text in (word, word.upper(), f"x {word.title()} y", f"a{word.swapcase()}"):
            assert logs.suspect(text), text
    assert logs.suspect("PA\u017fS")  # U+017F folds to "s" for the regex: not ASCII, so the regex decides
    assert not logs.suspect("event gateway.status_change_requested: done in a batch of 500")
