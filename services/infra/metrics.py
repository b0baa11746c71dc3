"""Prometheus metrics: every family mensageria exports, and the ``/metrics`` endpoint of each process.

Names follow the OpenTelemetry semantic conventions for HTTP, RPC and messaging where they
have one (``http.server.request.duration`` → ``mensageria_http_server_request_duration_seconds``),
with a ``mensageria_`` prefix. Labels are bounded: route templates, method and handler names,
error codes, exchange names — never an id.

Every service class and the gateway declare one :class:`Metrics`, which serves ``/metrics`` on the
process's port (``METRICS_PORT_<SERVICE>``; ``0`` turns it off) and times every RPC method and event
handler the container runs::

    class StudentsService:
        metrics = Metrics()

Counters and histograms live here, at module level, in one registry (:data:`REGISTRY`), and are
updated where things happen (``HTTP_DURATION`` in the gateway's entrypoint, ``RPC_CLIENT_DURATION``
in :mod:`services.infra.rpc`, ...). Gauges whose truth is in a database or the broker (backlogs,
outbox lag, dead letters) are read at scrape time instead: any dependency provider of the service
with a ``collect_metrics()`` method contributes them, through the :class:`ScrapeGauge` families
declared below, at most once a second whatever the scrape rate.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import eventlet
from eventlet import wsgi
from nameko.amqp.publish import UndeliverableMessage
from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from services.exceptions import ServiceError
from services.infra.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "mensageria_"
# OpenTelemetry's advice for request durations, in seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SCRAPE_CACHE_SECONDS = 1.0

OK, ERROR, TIMEOUT = "ok", "error", "timeout"

disable_created_metrics()  # no *_created series: Prometheus does not need them, and they double the output
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


# every family declared below and its labels (tests keep ids out of them)
DECLARED: dict[str, tuple[str, ...]] = {}


def _histogram(name: str, documentation: str, labels: tuple[str, ...], buckets=LATENCY_BUCKETS) -> Histogram:
    DECLARED[PREFIX + name] = labels
    return Histogram(PREFIX + name, documentation, labels, registry=REGISTRY, buckets=buckets)


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    DECLARED[PREFIX + name] = labels
    return Counter(PREFIX + name, documentation, labels, registry=REGISTRY)


# --- HTTP (the gateway) ------------------------------------------------------------------------

HTTP_DURATION = _histogram(
    "http_server_request_duration_seconds",
    "HTTP requests answered by the gateway, by route template, method and status: time to the response.",
    ("http_request_method", "http_route", "http_response_status_code"),
)

# --- RPC ---------------------------------------------------------------------------------------

RPC_SERVER_DURATION = _histogram(
    "rpc_server_call_duration_seconds",
    "RPC calls served, by service, method and outcome (ok, the error code raised, or error).",
    ("rpc_service", "rpc_method", "outcome"),
)
RPC_CLIENT_DURATION = _histogram(
    "rpc_client_call_duration_seconds",
    "RPC calls made, by target service, method and outcome (ok, the error code, or timeout).",
    ("rpc_service", "rpc_method", "outcome"),
)

# --- messaging ---------------------------------------------------------------------------------

PROCESS_DURATION = _histogram(
    "messaging_process_duration_seconds",
    "Events processed by a handler, by outcome (ok, the error code raised, or error): time to ack or reschedule.",
    ("service", "handler", "outcome"),
)
CONSUMED = _counter(
    "messaging_client_consumed_messages",
    "Events a handler finished with, by what became of them: acked, retried, dead_lettered or requeued.",
    ("service", "handler", "outcome"),
)
SENT = _counter(
    "messaging_client_sent_messages",
    "Events published (persistent, confirmed), by exchange and outcome: ok, unroutable or error.",
    ("messaging_destination_name", "outcome"),
)
PUBLISH_DURATION = _histogram(
    "messaging_client_operation_duration_seconds",
    "Time to publish one event and get the broker's confirm, by operation and exchange.",
    ("messaging_operation_name", "messaging_destination_name"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REFUSED = _counter(
    "messaging_refused_messages",
    "Deliveries refused before decoding (too large, not JSON, not an RPC request): answered or parked.",
    ("service", "kind", "action"),
)
REPLY_PATH_MENDED = _counter(
    "rpc_reply_path_mended",
    "Times a service's RPC reply consumer connected anew because its probe was unroutable or unanswered.",
    ("service", "reason"),
)
PARKED = _counter(
    "dead_letters_parked",
    "Events parked in the service's dead-letter queue, by reason: failed (retries spent) or malformed.",
    ("service", "reason"),
)

# --- status ------------------------------------------------------------------------------------

STATUS_RECORDED = _counter(
    "status_requests_recorded",
    "Status change requests recorded as pending, by way in: rpc, event (the gateway's) or job (bulk rows).",
    ("source",),
)
STATUS_APPLIED = _counter("status_requests_applied", "Status change requests applied (no-op changes included).")
STATUS_REJECTED = _counter("status_requests_rejected", "Status change requests rejected by the applier.")
STATUS_BATCH_SIZE = _histogram(
    "status_apply_batch_size",
    "Requests decided in one apply transaction.",
    (),
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

# --- mail and certificates -----------------------------------------------------------------------

MAIL_ATTEMPTS = _counter(
    "mail_send_attempts",
    "Mail send attempts, by outcome: sent, retried (failed, will be tried again) or failed (given up).",
    ("outcome",),
)
SMTP_ERRORS = _counter(
    "mail_smtp_errors",
    "Failed mail sends by kind: connection, timeout, tls, smtputf8, auth, sender_refused, "
    "recipient_refused, data_refused, smtp, other.",
    ("kind",),
)
CERTIFICATES_ISSUED = _counter("certificates_issued", "Certificates issued.")
CERTIFICATES_REVOKED = _counter("certificates_revoked", "Certificates revoked.")


# --- gauges read at scrape time --------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeGauge:
    """A gauge computed when Prometheus scrapes (from a database or the broker):
    ``OUTBOX_PENDING.family({("students",): 3})`` with labels, ``STATUS_PENDING.family(12)`` without."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self, values: dict[tuple[str, ...], float] | float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in values.items() if isinstance(values, dict) else [((), values)]:
            family.add_metric(list(labels), value)
        return family


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> ScrapeGauge:
    DECLARED[PREFIX + name] = labels
    return ScrapeGauge(PREFIX + name, documentation, labels)


DEAD_LETTERS = _gauge("dead_letters", "Events parked in the service's dead-letter queue now.", ("service",))
OUTBOX_PENDING = _gauge("outbox_pending_rows", "Outbox rows (events) not yet published.", ("service",))
OUTBOX_OLDEST_AGE = _gauge(
    "outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row (0: none).", ("service",)
)
STATUS_PENDING = _gauge("status_pending_requests", "Status change requests pending (the applier's backlog).")
STATUS_OLDEST_AGE = _gauge(
    "status_oldest_pending_age_seconds", "Age of the oldest pending status change request (0: none)."
)
JOBS_RUNNING = _gauge("status_running_jobs", "Bulk jobs sealed and not yet done.")
JOB_ROWS = _gauge(
    "status_job_rows", "Rows of the running bulk jobs, by state: pending, applied, rejected, failed.", ("state",)
)
JOB_ROWS_PER_SECOND = _gauge(
    "status_job_rows_per_second", "Rows settled per second by the running bulk jobs, since each was created."
)
MAIL_NOTIFICATIONS = _gauge(
    "mail_notifications", "Mails in the log by state: pending (to send or retry) and failed (given up).", ("state",)
)
MAIL_OLDEST_AGE = _gauge("mail_oldest_pending_age_seconds", "Age of the oldest pending mail (0: none).")


# --- recording helpers -----------------------------------------------------------------------------


@functools.cache
def child(metric: Counter | Histogram, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once: label values are few (bounded), calls many."""
    return metric.labels(*values)


def outcome_of(exc: BaseException | None) -> str:
    """``ok``, a :class:`ServiceError`'s code, or ``error``: a bounded label value."""
    if exc is None:
        return OK
    return exc.code if isinstance(exc, ServiceError) else ERROR


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "_OTHER"  # a client's made-up method is one value
    child(HTTP_DURATION, method, route, str(status)).observe(seconds)


@contextlib.contextmanager
def publishing(exchange: str, operation: str = "publish") -> Iterator[None]:
    """Times a confirmed publish and counts its outcome::

    with metrics.publishing(self.exchange.name):
        self.publisher.publish(payload, exchange=self.exchange, routing_key=event_type)
    """
    started = time.perf_counter()
    outcome = ERROR
    try:
        yield
        outcome = OK
    except UndeliverableMessage:
        outcome = "unroutable"
        raise
    finally:
        child(PUBLISH_DURATION, operation, exchange).observe(time.perf_counter() - started)
        child(SENT, exchange, outcome).inc()


# --- the provider and its endpoint ---------------------------------------------------------------


class ScrapeTimeGauges:
    """A Collector of the gauges a container's dependency providers read at scrape time
    (their ``collect_metrics()``), computed at most once every ``max_age`` seconds; a provider
    that fails (database or broker away) is left out of that scrape, with a warning."""

    def __init__(self, providers: Callable[[], Iterable[Any]], max_age: float = SCRAPE_CACHE_SECONDS):
        self.providers = providers
        self.max_age = max_age
        self.cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> list[Metric]:
        now = time.monotonic()
        if self.cached is not None and now - self.cached[0] < self.max_age:
            return self.cached[1]
        families: list[Metric] = []
        for provider in self.providers():
            try:
                families.extend(provider.collect_metrics())
            except Exception as exc:
                log.warning("metrics: %s could not be read: %s", type(provider).__name__, exc)
        self.cached = (time.monotonic(), families)
        return families


class MetricsEndpoint:
    """``/metrics`` (any path, in fact) on ``port``, served by eventlet's WSGI server in a greenthread."""

    def __init__(self, port: int, registry: CollectorRegistry):
        self.port = port
        self.app = make_wsgi_app(registry)
        self.socket = None
        self.thread = None

    def start(self) -> bool:
        """False, with an error logged, if the port is taken: the process runs on without /metrics."""
        try:
            # never SO_REUSEPORT: a second process on the port must be refused, not share it unnoticed
            self.socket = eventlet.listen(("0.0.0.0", self.port), reuse_port=False)
        except OSError as exc:
            log.error("metrics: cannot listen on port %d (%s); running without /metrics", self.port, exc)
            return False
        self.thread = eventlet.spawn(wsgi.server, self.socket, self.app, log=log, log_output=False, debug=False)
        return True

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.kill()
            self.thread = None
        if self.socket is not None:
            self.socket.close()
            self.socket = None


class Metrics(DependencyProvider):
    """Serves the process's metrics on ``METRICS_PORT_<SERVICE>`` while the container runs, and
    records the duration and outcome of every RPC method and event handler it runs.

    The scrape shows :data:`REGISTRY` plus the gauges of this service's dependency providers
    that have a ``collect_metrics()`` method (see :class:`ScrapeTimeGauges`).
    """

    def setup(self) -> None:
        settings = Settings.from_config(self.container.config)
        self.port = getattr(settings, f"metrics_port_{self.container.service_name}", 0)
        self.started: dict[Any, float] = {}
        self.endpoint: MetricsEndpoint | None = None

    def start(self) -> None:
        if not self.port:
            return
        registry = CollectorRegistry()
        registry.register(REGISTRY)
        registry.register(ScrapeTimeGauges(self._gauge_providers))
        self.endpoint = MetricsEndpoint(self.port, registry)
        if self.endpoint.start():
            log.info("metrics: %s serves /metrics on port %d", self.container.service_name, self.port)

    def _gauge_providers(self) -> list[Any]:
        return [d for d in self.container.dependencies if callable(getattr(d, "collect_metrics", None))]

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()

    kill = stop

    def worker_setup(self, worker_ctx: Any) -> None:
        if isinstance(worker_ctx.entrypoint, Rpc | EventHandler):
            self.started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self.started.pop(worker_ctx, None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        outcome = outcome_of(exc_info[1] if exc_info else None)
        entrypoint = worker_ctx.entrypoint
        family = RPC_SERVER_DURATION if isinstance(entrypoint, Rpc) else PROCESS_DURATION
        child(family, worker_ctx.service_name, entrypoint.method_name, outcome).observe(seconds)
