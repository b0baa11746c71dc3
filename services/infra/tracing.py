"""Traces (OpenTelemetry): every HTTP request, RPC call, event and mail of a request in one trace.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: then each process exports its spans over
OTLP/HTTP (the SDK's batch processor; the standard ``OTEL_*`` variables apply:
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``, ...). Off, every helper here returns at its first line.

The context travels as W3C trace context (``traceparent``, ``tracestate``):

- over HTTP in the request's ``traceparent`` header (the gateway continues a caller's trace);
- over AMQP as nameko context data, so as the headers ``nameko.traceparent`` and
  ``nameko.tracestate`` of every RPC call and event (the pika client in ``clients/`` reads
  and writes the same headers);
- through the databases where work waits for a background loop (a status request until it is
  applied, an outbox row until it is published, a mail until it is sent): the row keeps the
  ``traceparent`` of the span that wrote it;
- inside a batched message per item (``traceparent`` next to each item's ``correlation_id``):
  requests accepted together share one message, but each keeps its own trace.

The spans (kind, name):

- gateway: SERVER ``POST /students/{student_id}/status``; PRODUCER ``publish gateway.events``
- RPC: CLIENT and SERVER ``students/get_student``
- events: PRODUCER ``publish status.events`` (outbox relay, dispatchers), CONSUMER
  ``process status.student_status_changed`` (the handling worker); an item of a batch that
  belongs to another trace gets a span of its own there (``handle status.student_status_changed``),
  linked to the message's
- status: INTERNAL ``apply status change`` per request applied (or rejected)
- notifications: CLIENT ``send mail`` per SMTP delivery attempt

Services declare the provider next to :class:`~services.infra.correlation.Correlation`::

    class StudentsService:
        tracing = Tracing()      # every worker is a span: SERVER for RPC, CONSUMER for events
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.web.handlers import HttpRequestHandler
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from services.exceptions import ServiceError

log = logging.getLogger(__name__)

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"  # nameko context data keys; headers nameko.<key>
HEADERS = tuple(f"nameko.{key}" for key in (TRACEPARENT, TRACESTATE))
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# W3C trace context level 1: version-traceid-parentid-flags, lower-case hex (extract() checks the rest)
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
    SpanKind.INTERNAL,
)

_tracer = trace.get_tracer("mensageria")  # follows the global tracer provider
_enabled = False
_configure_lock = threading.Lock()
_configured_for: str | None = None


def enabled() -> bool:
    """Whether spans are being made in this process."""
    return _enabled


def enable(on: bool = True) -> None:
    """Turn spans on or off in this process (:func:`configure` turns them on)."""
    global _enabled
    _enabled = on


def configure(service_name: str, environ: dict | None = None) -> bool:
    """Once per process: when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its ``_TRACES_`` form) is set,
    install the SDK's tracer provider exporting over OTLP/HTTP, for ``service_name`` (unless
    ``OTEL_SERVICE_NAME`` names another). Returns whether spans are on."""
    global _configured_for
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return _enabled
    with _configure_lock:
        if _configured_for is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            name = environ.get("OTEL_SERVICE_NAME") or f"mensageria-{service_name}"
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
            _configured_for = name
            enable(True)
            log.info("traces: exported over OTLP as %s", name)
    return _enabled


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered (a stopping process calls it)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if _enabled and force_flush is not None:
        force_flush(int(timeout_seconds * 1000))


# --- context in carriers ------------------------------------------------------


def extract(carrier: Any) -> otel_context.Context | None:
    """The remote span context in ``carrier`` (a dict or headers with ``traceparent``), or None
    when there is none or it is not valid W3C trace context (then the span starts a new trace).
    Read here rather than through the SDK's propagator: the same rules, a third of the cost."""
    if not carrier:
        return None
    value = carrier.get(TRACEPARENT)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not _TRACEPARENT.fullmatch(value) or value.startswith("ff"):
        return None
    trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:55], 16)
    if not (trace_id and span_id):
        return None
    state = carrier.get(TRACESTATE)
    span_context = SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if isinstance(state, str) and state else None,
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def parent_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a stored ``traceparent`` names (None: none, or not valid)."""
    return extract({TRACEPARENT: traceparent}) if traceparent else None


def carrier_of(span: Any = None) -> dict[str, str]:
    """``{"traceparent": ..., ["tracestate": ...]}`` of ``span`` (default: the current one), or ``{}``."""
    context = (span if span is not None else trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return {}
    carrier = {TRACEPARENT: f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
    if context.trace_state:
        carrier[TRACESTATE] = context.trace_state.to_header()
    return carrier


def traceparent_of(span: Any = None) -> str | None:
    """The ``traceparent`` of ``span`` (default: the current one) while spans are on, else None."""
    if not _enabled:
        return None
    return carrier_of(span).get(TRACEPARENT)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the work in hand (what a stored row keeps), None when off or outside."""
    return traceparent_of()


def current_ids() -> dict[str, str]:
    """``{"trace_id": ..., "span_id": ...}`` (hex) of the span in hand, for log lines; ``{}`` when off."""
    if not _enabled:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def amqp_headers(span: Any = None) -> dict[str, str]:
    """``{"nameko.traceparent": ...}`` for a message published under ``span`` (``{}`` when off)."""
    if not _enabled:
        return {}
    return {f"nameko.{key}": value for key, value in carrier_of(span).items()}


# --- spans ----------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind = INTERNAL,
    parent: otel_context.Context | str | None = None,
    attributes: dict | None = None,
    links: Iterable[Link] = (),
) -> Iterator[Any]:
    """A span around a block, current inside it; ``parent``: a context or a stored traceparent
    (None: the current span). An exception leaving the block marks the span as an error. Off:
    yields None and does nothing."""
    if not _enabled:
        yield None
        return
    context = parent_of(parent) if isinstance(parent, str) else parent
    started = _tracer.start_span(name, context=context, kind=kind, attributes=attributes, links=links)
    token = otel_context.attach(trace.set_span_in_context(started))
    try:
        yield started
    except BaseException as exc:
        fail(started, exc)
        raise
    finally:
        otel_context.detach(token)
        started.end()


def start(
    name: str,
    kind: SpanKind = INTERNAL,
    parent: otel_context.Context | str | None = None,
    attributes: dict | None = None,
    links: Iterable[Link] = (),
    start_time: int | None = None,
) -> Any:
    """A started span (not made current): end it with :func:`end`. None when off."""
    if not _enabled:
        return None
    context = parent_of(parent) if isinstance(parent, str) else parent
    return _tracer.start_span(
        name, context=context, kind=kind, attributes=attributes, links=links, start_time=start_time
    )


def end(spans: Iterable[Any], error: BaseException | None = None) -> None:
    """End started spans, marking them as errors when ``error`` is given."""
    for started in spans:
        if started is None:
            continue
        if error is not None:
            fail(started, error)
        started.end()


def fail(started: Any, error: BaseException | str) -> None:
    """Mark a span as an error (an exception is recorded as its event)."""
    if started is None or not started.is_recording():
        return
    if isinstance(error, BaseException):
        started.record_exception(error)
        started.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
    else:
        started.set_status(Status(StatusCode.ERROR, error[:500]))


def _in_current_trace(context: otel_context.Context | None) -> bool:
    current = trace.get_current_span().get_span_context()
    return context is None or (
        current.is_valid and trace.get_current_span(context).get_span_context().trace_id == current.trace_id
    )


@contextlib.contextmanager
def item(payload: dict, name: str, attributes: dict | None = None) -> Iterator[None]:
    """Handle one item of a batched message in its own trace: when the item's ``traceparent``
    belongs to another trace than the message's, the block is a span of that trace (linked to the
    message's span); otherwise the block runs in the message's span. Off: does nothing."""
    if not _enabled:
        yield
        return
    context = extract(payload)
    if _in_current_trace(context):
        yield
        return
    links = _links_to_current()
    with span(name, INTERNAL, context, attributes, links):
        yield


@contextlib.contextmanager
def adopted(items: list[dict], name: str) -> Iterator[None]:
    """Items of a batched message handled together (one transaction): each item of another trace
    than the message's gets a span of that trace for the block (linked to the message's span), and
    each item's ``traceparent`` becomes the span its work belongs to, for the rows that keep it.
    Off: does nothing."""
    if not _enabled:
        yield
        return
    here = current_traceparent()
    links, started = _links_to_current(), []
    for entry in items:
        context = extract(entry)
        if _in_current_trace(context):
            entry[TRACEPARENT] = here
        else:
            started.append(_tracer.start_span(name, context=context, links=links))
            entry[TRACEPARENT] = traceparent_of(started[-1])
    try:
        yield
    except BaseException as exc:
        end(started, exc)
        raise
    end(started)


def _links_to_current() -> list[Link]:
    current = trace.get_current_span().get_span_context()
    return [Link(current)] if current.is_valid else []


# --- nameko ---------------------------------------------------------------------


def worker_span_name(worker_ctx: Any) -> tuple[str, SpanKind, dict]:
    """``(name, kind, attributes)`` of the span of a worker: RPC SERVER, event CONSUMER."""
    entrypoint = worker_ctx.entrypoint
    service = worker_ctx.service_name
    if isinstance(entrypoint, EventHandler):
        source, event_type = entrypoint.source_service, entrypoint.event_type
        return (
            f"process {source}.{event_type}",
            CONSUMER,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": f"{source}.events",
                "messaging.rabbitmq.destination.routing_key": event_type,
                "messaging.consumer.group.name": service,
            },
        )
    method = entrypoint.method_name
    kind = "rpc" if isinstance(entrypoint, Rpc) else type(entrypoint).__name__.lower()
    return (
        f"{service}/{method}",
        SERVER,
        {"rpc.system": "nameko", "rpc.service": service, "rpc.method": method, "mensageria.entrypoint": kind},
    )


class Tracing(DependencyProvider):
    """Makes each worker of the service a span (RPC: SERVER, events: CONSUMER) whose parent is the
    caller's span (from the message's ``nameko.traceparent``), and puts the worker's span in its
    context data, so every call and event the worker makes is that span's child. A gateway worker
    continues the span its HTTP entrypoint started. Sets up OTLP export at start (:func:`configure`)."""

    def setup(self) -> None:
        configure(self.container.service_name)
        self.active: dict[Any, tuple[Any, Any]] = {}

    def stop(self) -> None:
        flush()

    def kill(self) -> None:
        flush(1.0)

    def worker_setup(self, worker_ctx: Any) -> None:
        if not _enabled:
            return
        parent = extract(worker_ctx.data)
        if isinstance(worker_ctx.entrypoint, HttpRequestHandler):  # the entrypoint's span goes on
            if parent is not None:
                self.active[worker_ctx] = (None, otel_context.attach(parent))
            return
        name, kind, attributes = worker_span_name(worker_ctx)
        started = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(started))
        worker_ctx.data.update(carrier_of(started))  # calls and events made by the worker: its children
        self.active[worker_ctx] = (started, token)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        active = self.active.get(worker_ctx)
        if active is None or active[0] is None or exc_info is None:
            return
        error = exc_info[1]
        if isinstance(error, ServiceError):  # answered as designed (not found, invalid): no server error,
            active[0].set_attribute("error.type", error.code)  # as gRPC's conventions have it; the caller's is
        else:
            fail(active[0], error)

    def worker_teardown(self, worker_ctx: Any) -> None:
        active = self.active.pop(worker_ctx, None)
        if active is None:
            return
        started, token = active
        if started is not None:
            started.end()
        otel_context.detach(token)
