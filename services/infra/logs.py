"""Log records that say where they come from, and never carry a secret.

Referenced from ``config.yaml``'s ``LOGGING`` block, whose handler runs every record through
three filters and one of two formatters (``LOG_FORMAT``: ``plain``, the default, or ``json``):

- :class:`DeliberateErrorsWithoutTraceback`: a deliberate error is one line, not a traceback;
- :class:`Context`: adds ``service``, ``correlation_id``, ``entrypoint`` and, when known,
  ``student_id``, ``request_id``, ``job_id`` (passed as ``extra=`` or found in the worker's
  arguments), and while traces are on the ``trace_id`` and ``span_id`` in hand;
- :class:`Redaction`: renders the message and the traceback, with API keys, ``Authorization``
  values, passwords, secrets and mail bodies cut out;
- ``plain`` (:class:`PlainFormatter`): today's line, `` [cid=<id>]`` appended; ``json``
  (python-json-logger): one object per line with every field above.

A service declares :class:`LogContext` to name itself in its records and to log one line per
worker, with its duration::

    class StudentsService:
        name = "students"
        log_context = LogContext()

        @rpc
        def get_student(self, student_id):
            log.info("looking", extra={"request_id": ...})  # + service, correlation_id, student_id
"""

from __future__ import annotations

import email.message
import functools
import inspect
import logging
import os
import re
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

with warnings.catch_warnings():  # tools.launch logs through here: keep eventlet's notice off its output
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from nameko.extensions import DependencyProvider

    from services.exceptions import ServiceError
    from services.infra import correlation, tracing

IDS = ("student_id", "request_id", "job_id")
REDACTED = "[redacted]"

worker_log = logging.getLogger("mensageria.worker")

# No format here prints a thread's name, and under eventlet finding it is the dearest part of a record:
# each worker is a new green thread, whose first ``threading.current_thread()`` lists every thread.
logging.logThreads = False

_process_services: list[str] = []  # the services this process runs, in the order they were created
_service: ContextVar[str | None] = ContextVar("service", default=None)
_ids: ContextVar[Mapping[str, Any] | None] = ContextVar("log_ids", default=None)
_started: ContextVar[float | None] = ContextVar("worker_started", default=None)


def serving(service_name: str) -> None:
    """Name a service this process runs: records made outside its workers carry it."""
    if service_name not in _process_services:
        _process_services.append(service_name)


def service() -> str | None:
    """The service of the work in hand: its worker's, else the process's (``a,b`` if it runs several)."""
    return _service.get() or (",".join(_process_services) or None)


# --- the context every record carries ---------------------------------------------------------


class LogContext(DependencyProvider):
    """Names the service in its log records (from the moment its container is made), puts the
    ids a worker was called with (``student_id``, ``request_id``, ``job_id``) in the records
    the worker makes, and logs one line per worker with its outcome and duration."""

    def bind(self, container: Any, attr_name: str) -> LogContext:
        serving(container.service_name)  # before the container starts: nameko's own lines too
        return super().bind(container, attr_name)

    def get_dependency(self, worker_ctx: Any) -> str:
        return worker_ctx.service_name

    def worker_setup(self, worker_ctx: Any) -> None:
        _service.set(worker_ctx.service_name)
        _ids.set(ids_in_call(worker_ctx))
        _started.set(time.perf_counter())

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = _started.get()
        if started is None or not worker_log.isEnabledFor(logging.INFO):
            return
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        extra: dict[str, Any] = {"duration_ms": duration_ms}
        if exc_info is not None:
            outcome = extra["error"] = type(exc_info[1]).__name__
        elif (status := http_status(result)) is not None:
            outcome, extra["http_status"] = str(status), status
        else:
            outcome = "done"
        client = getattr(worker_ctx.args[0], "remote_addr", None) if worker_ctx.args else None
        if isinstance(client, str):  # an HTTP request's
            extra["client"] = client
        worker_log.info("%s: %s in %.1f ms", correlation.describe(worker_ctx), outcome, duration_ms, extra=extra)

    def worker_teardown(self, worker_ctx: Any) -> None:
        _service.set(None)
        _ids.set(None)
        _started.set(None)


def ids_in_call(worker_ctx: Any) -> dict[str, Any]:
    """``student_id``, ``request_id`` and ``job_id`` among a worker's arguments (by parameter
    name, HTTP path values included), or in a payload that names one item."""
    try:
        signature = _signature(type(worker_ctx.service), worker_ctx.entrypoint.method_name)
        arguments = signature.bind_partial(worker_ctx.service, *worker_ctx.args, **worker_ctx.kwargs).arguments
    except (AttributeError, TypeError, ValueError):
        return {}
    found = {name: arguments[name] for name in IDS if _is_id(arguments.get(name))}
    for value in arguments.values():
        for name, item in _ids_in_payload(value).items():
            found.setdefault(name, item)
    return found


@functools.cache
def _signature(service_cls: type, method_name: str) -> inspect.Signature:
    """A method's signature, worked out once (it costs more than the rest of a small request)."""
    return inspect.signature(getattr(service_cls, method_name))


def _ids_in_payload(value: Any) -> dict[str, Any]:
    """The ids of a payload ``{"student_id": ...}``, or of a batch of one: ``{"changes": [{...}]}``."""
    if not isinstance(value, Mapping):
        return {}
    found = {name: value[name] for name in IDS if _is_id(value.get(name))}
    for item in value.values():
        if isinstance(item, list) and len(item) == 1 and isinstance(item[0], Mapping):
            for name in IDS:
                if name not in found and _is_id(item[0].get(name)):
                    found[name] = item[0][name]
    return found


def _is_id(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= 200
    return isinstance(value, int) and not isinstance(value, bool)


def http_status(result: Any) -> int | None:
    """The status of an HTTP entrypoint's result (a Response, or ``(status, body)``), else None."""
    status = getattr(result, "status_code", None)
    if status is None and isinstance(result, tuple) and result and isinstance(result[0], int):
        status = result[0]
    return status if isinstance(status, int) else None


class Context(logging.Filter):
    """Adds ``service``, ``correlation_id`` (None outside any request), ``entrypoint`` and the ids
    in hand to every record; an ``extra=`` value is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {"service": service(), "correlation_id": correlation.current()}
        entrypoint = correlation.current_entrypoint()
        if entrypoint:
            fields["entrypoint"] = entrypoint
        fields.update(_ids.get() or {})
        fields.update(tracing.current_ids())  # traces on: the span a line was logged in
        for name, value in fields.items():
            if name not in record.__dict__:
                setattr(record, name, value)
        return True


class DeliberateErrorsWithoutTraceback(logging.Filter):
    """A worker that raises a :class:`ServiceError` (not found, validation, …)
    answered its caller as designed: log that one line, without a traceback.
    Anything else keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ServiceError):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} [{exc.code}]"
        return True


# --- redaction ---------------------------------------------------------------------------------

_QUOTED = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\""""
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys (gateway/access/keys.py: msk_<id>_<secret>_<crc>), whole or in part; the id may stay
    (re.compile(r"msk_([a-z0-9]{12})_[0-9A-Za-z_]+"), rf"msk_\1_{REDACTED}"),
    (re.compile(r"msk_(?![a-z0-9]{12}_\[)[0-9A-Za-z_-]+"), f"msk_{REDACTED}"),
    # an Authorization header's value, as a header line, a dict or tuple repr, or JSON
    (
        re.compile(rf"""(?i)(\bauthorization(?:['"]\s*[:,=]|\s*[:=])\s*+)(?!\[redacted\])({_QUOTED}|[^\r\n]*)"""),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b([Bb]earer|BEARER|Basic)\s++(?!\[redacted\])[A-Za-z0-9._~+/-]{6,}=*"), rf"\1 {REDACTED}"),
    # a URI's password: amqp://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]+@"), rf"\1{REDACTED}@"),
    # password=..., 'smtp_password': '...', API_KEY_SECRET=..., "token": "..."
    (
        re.compile(
            rf"""(?i)(\b\w*(?:password|passwd|secret|token)\w*['"]?\s*[:=]\s*+)(?!\[redacted\])({_QUOTED}|[^\s,;&)}}\]]+)"""
        ),
        rf"\1{REDACTED}",
    ),
    # mail bodies: a body field (body_text=..., "body_html": ...), an HTML document, a MIME message
    (re.compile(rf"""(?i)(\bbody\w*['"]?\s*[:=]\s*)(b?(?:{_QUOTED}))"""), rf"\1{REDACTED}"),
    (re.compile(r"(?is)<html\b.*?(?:</html\s*>|\Z)"), f"<html>{REDACTED}</html>"),
    (re.compile(r"(?is)(?:MIME-Version:|Content-Transfer-Encoding:).*"), f"[mail {REDACTED}]"),
)
# text in which none of these words appears, in any case, holds nothing the rules above would cut
_SUSPECT_WORDS = ("msk_", "authorization", "bearer", "basic", "://", "pass", "secret", "token", "body")
_SUSPECT_WORDS += ("<html", "mime-", "-encoding")
_SUSPECT = re.compile("(?i)" + "|".join(map(re.escape, _SUSPECT_WORDS)))


def suspect(text: str) -> bool:
    """Whether ``text`` holds one of the words the rules look for, in any case. ASCII text (all but
    a few lines) is lowered and searched word by word, ten times quicker than ``_SUSPECT``, with the
    same answer: for ASCII, lowering is exactly the regex's case-insensitivity."""
    if text.isascii():
        lowered = text.lower()
        for word in _SUSPECT_WORDS:  # noqa: SIM110 (a loop: any() over a generator costs half as much again)
            if word in lowered:
                return True
        return False
    return _SUSPECT.search(text) is not None


_SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|TOKEN|_PASS$|_KEY$")
MIN_SECRET_LENGTH = 4


def environment_secrets(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The values of the process's variables that name a password, secret, token or key
    (``SMTP_PASSWORD``, ``API_KEY_SECRET``, ``RABBITMQ_APP_PASSWORD``, ``MENSAGERIA_KEY``, …),
    longest first."""
    values = {v for k, v in environ.items() if _SECRET_VARIABLE.search(k.upper()) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` without API keys, Authorization values, passwords, ``secrets`` or mail bodies."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not suspect(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redacted_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redacted_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redacted_value(v, secrets) for v in value]
    return _stand_in(value)


def _stand_in(value: Any) -> Any:
    """What a log line shows of a mail: that it is one, and its Message-ID; never its content."""
    if isinstance(value, email.message.Message):
        return f"<mail {value.get('Message-ID', '')}>".replace(" >", ">")
    return value


_PLAIN = frozenset({int, float, bool, type(None)})
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class Redaction(logging.Filter):
    """Renders each record's message (and traceback, and stack) with every secret cut out, so
    that no formatter can print one: API keys (``msk_…``), ``Authorization`` values, passwords
    (``password=``, ``amqp://user:pass@``, the values of ``*_PASSWORD``/``*_SECRET`` variables),
    mail bodies (a mail passed as an argument, a ``body…`` field, HTML, a MIME text). The added
    fields are redacted too (a client can send anything as its ``X-Request-Id``)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.secrets = environment_secrets()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(self._message(record), self.secrets)
        record.args = ()
        if record.exc_info:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info = None  # formatters print exc_text instead
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        fields = record.__dict__
        for name in fields.keys() - _STANDARD:  # the added fields
            value = fields[name]
            if type(value) not in _PLAIN and not name.startswith("_"):  # numbers and None hold no secret
                fields[name] = _redacted_value(value, self.secrets)
        return True

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple):
            args = tuple(_stand_in(arg) for arg in args)
        elif isinstance(args, Mapping):
            args = {key: _stand_in(value) for key, value in args.items()}
        try:
            message = str(_stand_in(record.msg))
            return message % args if args else message
        except Exception:  # arguments that do not fit the message: show both, still redacted
            return f"{record.msg!r} (log arguments that did not fit: {record.args!r})"


# --- formatting --------------------------------------------------------------------------------


class PlainFormatter(logging.Formatter):
    """The format's line, with `` [cid=<id>]`` after the message when the record has a correlation
    id, so that plain logs tie the steps of one request together too."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        correlation_id = getattr(record, "correlation_id", None)
        return f"{line} [cid={correlation_id}]" if correlation_id else line
