"""gateway: JSON over HTTP, translated into RPC calls (reads, creates) and
durably dispatched events (status changes, answered 202 Accepted).

The routes live in :mod:`gateway.routes`, one module per resource; this class
declares the dependencies they use. Each handler's docstring carries its
OpenAPI operation, its ``@http(..., errors=...)`` the errors it answers with
(see gateway.openapi).
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

# the package, not its classes: `nameko run gateway.service` runs every class
# with entrypoints found at the top level of this module as a service
from gateway import routes
from gateway import student_reads as reads
from gateway.access.gate import Access
from gateway.console import pulse as live
from gateway.console import routes as console
from gateway.dependencies import BatchingEventDispatcher, KnownStudents
from gateway.entrypoints import PUBLIC, http, json_response
from gateway.exceptions import ServiceUnavailable
from gateway.openapi import build_spec
from services.exceptions import ServiceError
from services.infra.correlation import Correlation
from services.infra.heap import LeanHeap
from services.infra.logs import LogContext
from services.infra.metrics import Metrics
from services.infra.rpc import TimedRpcProxy
from services.infra.settings import SettingsProvider, one_line_config_errors
from services.infra.tracing import Tracing

one_line_config_errors()  # `nameko run` without a secret: one line naming it


class GatewayService(
    routes.StudentRoutes,
    routes.StatusChangeRoutes,
    routes.BulkJobRoutes,
    routes.CertificateRoutes,
    routes.AccessRoutes,
    routes.DocsRoutes,
    console.ConsoleRoutes,
    reads.StudentEvents,
):
    name = "gateway"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    heap = LeanHeap()  # less for the garbage collector: start-up heap frozen, no cycle per worker
    students = TimedRpcProxy("students")
    status = TimedRpcProxy("status")
    certificates = TimedRpcProxy("certificates")
    notifications = TimedRpcProxy("notifications")
    # concurrent status changes share one confirmed message: {"requests": [...]}
    dispatch = BatchingEventDispatcher(batch_key="requests")
    known_students = KnownStudents()
    student_reads = reads.StudentReads()  # GET /students/{id}, fed by events (gateway.student_reads)
    settings = SettingsProvider()
    access = Access()
    pulse = live.ConsolePulse()  # the console's live view: one sampler, one stream per open page

    @http("GET", "/health", scope=PUBLIC)
    def health(self, request: Request) -> Response:
        """Liveness: the gateway process answers.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: The process is alive.}
        """
        return json_response(200, {"status": "ok"})

    @http("GET", "/ready", scope=PUBLIC, errors=(ServiceUnavailable,))
    def ready(self, request: Request) -> Response:
        """Readiness: the broker is reachable and students and status answer.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: Ready to serve.}
        """
        checks: dict[str, str] = {}
        for name, proxy in (("students", self.students), ("status", self.status)):
            try:
                proxy.call("ping", self.settings.ready_timeout)
                checks[name] = "ok"
            except ServiceError as exc:
                checks[name] = exc.code
        if any(result != "ok" for result in checks.values()):
            raise ServiceUnavailable("Not ready.", {"checks": checks})
        return json_response(200, {"status": "ready", "checks": checks})

    @http("GET", "/openapi.json", scope=PUBLIC)
    def openapi(self, request: Request) -> Response:
        """This document.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: The OpenAPI 3 document of this gateway.}
        """
        return json_response(200, build_spec(GatewayService))
