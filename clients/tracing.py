"""Traces from the pika client: W3C trace context in nameko's headers, spans through the OpenTelemetry API.

The client instruments itself as a library does: it makes spans with the OpenTelemetry API
(``opentelemetry-api``) and the tracer provider your program installed. Without an installed
SDK (or without the API at all) the spans cost next to nothing and nothing is sent. With one:

- every call is a CLIENT span ``students/get_student`` and every publish a PRODUCER span
  ``publish gateway.events``, children of your current span, and the message carries the span
  as ``nameko.traceparent`` (and ``nameko.tracestate``): the service's worker is its child;
- every event a subscriber receives is handled in a CONSUMER span ``process status.student_status_changed``
  whose parent is the span that published it, and which is current while your callback runs.

Only W3C trace context is written and read (the services speak nothing else), whatever
propagators your program configured for its own HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the API is optional: no spans, no headers
    trace = None

HEADER_PREFIX = "nameko"
KEYS = ("traceparent", "tracestate")

if trace is not None:
    _propagator = TraceContextTextMapPropagator()
    _tracer = trace.get_tracer("mensageria.clients")
    CLIENT, PRODUCER, CONSUMER = SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER
else:
    CLIENT = PRODUCER = CONSUMER = None


@contextlib.contextmanager
def span(name: str, kind: Any, attributes: dict[str, Any], headers: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span around a block (None without the API). ``headers``: a received message's, whose
    ``nameko.traceparent`` is the span's parent (a consumer's); otherwise the current span is."""
    if trace is None:
        yield None
        return
    parent = _extract(headers) if headers is not None else None
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as current:
        yield current


def headers_of(current: Any) -> dict[str, str]:
    """``{"nameko.traceparent": ...}`` naming ``current`` (``{}`` when it is not a valid span)."""
    if current is None or not current.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(current))
    return {f"{HEADER_PREFIX}.{key}": value for key, value in carrier.items()}


def _extract(headers: Mapping[str, Any]) -> Any:
    carrier = {}
    for key in KEYS:
        value = headers.get(f"{HEADER_PREFIX}.{key}")
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            carrier[key] = value
    return _propagator.extract(carrier) if carrier else otel_context.Context()


def rpc_attributes(service: str, method: str) -> dict[str, Any]:
    return {"rpc.system": "nameko", "rpc.service": service, "rpc.method": method}


def messaging_attributes(operation: str, exchange: str, routing_key: str) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": operation,
        "messaging.operation.type": "send" if operation == "publish" else operation,
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
