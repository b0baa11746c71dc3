"""The correlation id: one id per request, carried by every hop the request causes.

The gateway takes ``X-Request-Id`` (or makes one) and hands it to its worker as nameko
context data; nameko sends a worker's context data as AMQP headers (``nameko.correlation_id``)
on every RPC call it makes and every event it dispatches, and gives it to the worker that
receives them, so within workers the id travels by itself. Work done outside a worker (the
outbox relay, the status applier, the mail sender) carries the id stored with each row.

:func:`current` is the id of the work in hand (for log lines, stored rows, mail headers)::

    class StudentsService:
        correlation = Correlation()      # every worker of this service runs under its id

        @rpc
        def create_student(self, data):
            ...  # current() is the caller's id; calls and events made here carry it
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.web.handlers import HttpRequestHandler

from services.infra import ids

KEY = "correlation_id"  # in nameko context data; on the wire: the AMQP header "nameko.correlation_id"
HEADER = f"nameko.{KEY}"
MAX_LENGTH = 128
PATTERN = rf"[!-~]{{1,{MAX_LENGTH}}}"  # visible ASCII, no spaces: what sane() accepts (and schemas check)
_SANE = re.compile(PATTERN)

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_entrypoint: ContextVar[str | None] = ContextVar("entrypoint", default=None)


def new_id() -> str:
    """A new correlation id: a version 7 UUID, so that the rows that keep it (requests, their
    ``correlation_id`` index) are written in order, not all over the index (``services.infra.ids``)."""
    return ids.uuid7_texts(1)[0]


def current() -> str | None:
    """The correlation id of the work in hand, or None outside any."""
    return _current.get()


def current_entrypoint() -> str | None:
    """What is being run: ``rpc students.get_student``, ``event status.student_status_changed``, …"""
    return _entrypoint.get()


def sane(value: Any) -> str | None:
    """``value`` if it can be a correlation id (1 to 128 visible ASCII characters), else None."""
    return value if isinstance(value, str) and _SANE.fullmatch(value) else None


@contextlib.contextmanager
def working_on(correlation_id: str | None, entrypoint: str | None = None) -> Iterator[str]:
    """Run a block under ``correlation_id`` (a new one if None): what background loops use per
    row, and handlers per item of a batched message (``entrypoint`` None: the one in hand)::

        for change in status_changes(payload):
            with working_on(change["correlation_id"]):
                ...  # log lines, outbox rows and calls through TimedRpcProxy carry the change's id
    """
    correlation_id = sane(correlation_id) or new_id()
    tokens = (_current.set(correlation_id), _entrypoint.set(entrypoint or _entrypoint.get()))
    try:
        yield correlation_id
    finally:
        _entrypoint.reset(tokens[1])
        _current.reset(tokens[0])


def describe(worker_ctx: Any) -> str:
    """``rpc students.get_student``: the kind of entrypoint and what it runs."""
    entrypoint = worker_ctx.entrypoint
    if isinstance(entrypoint, HttpRequestHandler):
        return f"http {entrypoint.method} {getattr(entrypoint, 'route', entrypoint.url)}"
    if isinstance(entrypoint, EventHandler):
        return f"event {entrypoint.source_service}.{entrypoint.event_type}"
    kind = "rpc" if isinstance(entrypoint, Rpc) else type(entrypoint).__name__.lower()
    return f"{kind} {worker_ctx.service_name}.{entrypoint.method_name}"


class Correlation(DependencyProvider):
    """Runs every worker of the service under the correlation id its caller sent (a new one if
    none came), and puts that id in the worker's context data, so every call and event the worker
    makes carries it. The dependency is the id itself."""

    def get_dependency(self, worker_ctx: Any) -> str:
        # called before worker_setup: the id is settled here, once per worker
        correlation_id = sane(worker_ctx.data.get(KEY)) or new_id()
        worker_ctx.data[KEY] = correlation_id
        return correlation_id

    def worker_setup(self, worker_ctx: Any) -> None:
        _current.set(worker_ctx.data[KEY])
        _entrypoint.set(describe(worker_ctx))

    def worker_teardown(self, worker_ctx: Any) -> None:
        _current.set(None)
        _entrypoint.set(None)
