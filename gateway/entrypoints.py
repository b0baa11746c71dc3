"""The gateway's HTTP entrypoint and its one error table.

Every exception, raised here or received typed from a service, becomes
``{"error": CODE, "message": ..., "details": {...}}`` with the status from
:data:`ERROR_STATUSES`; anything unexpected is logged and answered 500 without
a traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import time
from typing import Any

import eventlet
import orjson
from eventlet import wsgi as eventlet_wsgi
from nameko.exceptions import BadRequest, ContainerBeingKilled, IncorrectSignature
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.routing import BaseConverter, Map
from werkzeug.wrappers import Request, Response

from gateway.access.gate import AccessGate, audit_entry
from gateway.exceptions import (
    ACCESS_ERRORS,
    AccessDenied,
    BackendTimeout,
    InsufficientScope,
    InvalidApiKey,
    MalformedJson,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceUnavailable,
    Unauthenticated,
    UnsupportedMediaType,
)
from gateway.protocol import GatewayProtocol
from services.exceptions import (
    Conflict,
    NotFound,
    ServiceError,
    ValidationFailed,
    VersionMismatch,
)
from services.infra import correlation, metrics, tracing
from services.infra.pagination import MAX_ID
from services.infra.settings import Settings

log = logging.getLogger(__name__)

# most specific first: the first matching class decides
ERROR_STATUSES: tuple[tuple[type[ServiceError], int], ...] = (
    (MalformedJson, 400),
    (Unauthenticated, 401),
    (InvalidApiKey, 401),
    (InsufficientScope, 403),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (VersionMismatch, 412),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (ValidationFailed, 422),
    (RateLimited, 429),
    (ServiceUnavailable, 503),
    (BackendTimeout, 504),
)


def status_for(exc: ServiceError) -> int:
    return status_of(type(exc))


def status_of(exc_type: type[Exception]) -> int:
    for mapped, status in ERROR_STATUSES:
        if issubclass(exc_type, mapped):
            return status
    return 500


JSON = "application/json"
# every answer names the gateway process that gave it (several share one port: GATEWAY_PROCESSES)
PROCESS_HEADER = "X-Gateway-Process"


def json_bytes(body: object) -> bytes:
    """``body`` as JSON (UTF-8; dates as ISO 8601)."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def json_response(status: int, body: object, headers: dict | None = None) -> Response:
    return Response(json_bytes(body), status=status, headers=headers, mimetype=JSON)


def error_response(exc: Exception) -> Response:
    if isinstance(exc, IncorrectSignature | BadRequest):
        exc = RouteNotFound("No such resource.", {})
    if isinstance(exc, ContainerBeingKilled):  # this gateway is stopping: another one may answer
        exc = ServiceUnavailable("The gateway is restarting; try again.", {})
    if not isinstance(exc, ServiceError):
        log.error("unexpected error in the gateway", exc_info=exc)
        return json_response(500, {"error": "INTERNAL_ERROR", "message": "Internal error.", "details": {}})
    return json_response(status_for(exc), exc.to_dict(), getattr(exc, "headers", None))


class JsonWsgiApp(WsgiApp):
    """Unknown paths and wrong methods answer JSON like everything else."""

    def __call__(self, environ, start_response):
        # eventlet's server ends wsgi.input at the end of the body, chunked or not;
        # without this flag Werkzeug reads a chunked body as empty
        environ.setdefault("wsgi.input_terminated", True)
        started = time.perf_counter()
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except WerkzeugMethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or ())
            response = error_response(MethodNotAllowed("Method not allowed.", {"allowed": allowed}))
            response.headers["Allow"] = ", ".join(allowed)
            return _unmatched(request, response, started)(environ, start_response)
        except HTTPException:
            values = None
        if values is None or any(isinstance(v, int) and v > MAX_ID for v in values.values()):
            response = error_response(RouteNotFound("No such resource.", {"path": request.path}))
            return _unmatched(request, response, started)(environ, start_response)
        request.path_values = values
        return provider.handle_request(request)(environ, start_response)


def _unmatched(request: Request, response: Response, started: float) -> Response:
    """A request no route took (404, 405): counted under the route ``unmatched``."""
    metrics.observe_http(request.method, "unmatched", response.status_code, time.perf_counter() - started)
    response.headers["X-Request-Id"] = correlation_id_of(request)  # errors answer with it too
    response.headers[PROCESS_HEADER] = str(os.getpid())
    return response


def correlation_id_of(request: Request) -> str:
    """The request's ``X-Request-Id`` if it is sane (:func:`correlation.sane`), else a new one."""
    return correlation.sane(request.headers.get("X-Request-Id")) or correlation.new_id()


class IdConverter(BaseConverter):
    """``<id:name>``: a positive integer id. The bounds live in the regex: a
    converter that rejects a value in ``to_python`` makes Werkzeug answer 405."""

    regex = r"[1-9][0-9]{0,9}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


class CodeConverter(BaseConverter):
    """``<code:name>``: a certificate code (URL-safe base64, no dots: ``<code>.pdf`` stays apart)."""

    regex = r"[A-Za-z0-9_-]{1,64}"
    part_isolating = True


class UuidConverter(BaseConverter):
    """``<uuid:name>``: a UUID, kept as text (``/status-requests/bulk`` is not a request id)."""

    regex = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    part_isolating = True


class KeyIdConverter(BaseConverter):
    """``<key:name>``: an API key's id."""

    regex = r"[a-z0-9]{12}"
    part_isolating = True


class JsonWebServer(WebServer):
    """nameko's web server, answering JSON for unknown routes and wrong methods.

    eventlet refuses a header line of ``MAX_HEADER_LINE`` bytes with a bare 400 before
    any application sees it; 8 KiB is less than an ``Authorization`` header may carry
    here (a large bearer token, garbage), so lines up to 16 KiB reach the gateway, which
    answers them as it answers any header (a malformed key is a 401, never a 500).
    """

    MAX_HEADER_LINE = 16 * 1024

    def start(self) -> None:
        """nameko's ``start``, listening with ``SO_REUSEPORT`` exactly when this gateway runs
        several processes on its address (``GATEWAY_PROCESSES``; the kernel spreads the
        connections among them). One process alone does not set it: a second gateway started
        on a port already served is refused, not let in to share it unnoticed."""
        eventlet_wsgi.MAX_HEADER_LINE = max(eventlet_wsgi.MAX_HEADER_LINE, self.MAX_HEADER_LINE)
        if self._starting:
            return
        self._starting = True
        self.settings = Settings.from_config(self.container.config)
        self._sock = eventlet.listen(self.bind_addr, reuse_port=self.settings.gateway_processes > 1)
        self._sock.settimeout(None)  # as nameko does: https://github.com/celery/kombu/issues/838
        self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
        self._gt = self.container.spawn_managed_thread(self.run)

    def get_wsgi_server(self, sock: Any, wsgi_app: Any, protocol: Any = GatewayProtocol, debug: bool = False) -> Any:
        """nameko's server; eventlet's access line per request only with ``GATEWAY_ACCESS_LOG``: the
        worker line (``services.infra.logs``) already says what each request was and how it ended."""
        return eventlet_wsgi.Server(
            sock,
            sock.getsockname(),
            wsgi_app,
            protocol=protocol,
            debug=debug,
            log=logging.getLogger("nameko.web.server"),
            log_output=self.settings.gateway_access_log,
        )

    def context_data_from_headers(self, request: Request) -> dict:
        # the worker runs under the request's correlation id (and its span, while traces are on),
        # and every call and event it makes carries them
        data = {correlation.KEY: request.correlation_id}
        if request.span is not None:
            data.update(tracing.carrier_of(request.span))
        return data

    def get_wsgi_app(self) -> JsonWsgiApp:
        return JsonWsgiApp(self)

    def make_url_map(self) -> Map:
        url_map = Map(
            converters={"id": IdConverter, "code": CodeConverter, "uuid": UuidConverter, "key": KeyIdConverter}
        )
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map


PUBLIC = "public"  # ``@http(..., scope=PUBLIC)``: a route anyone may call, without a key
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED_REFUSALS = frozenset({401, 403, 429})
TARGET_FIELDS = ("id", "student_id", "request_id", "job_id", "key_id", "code")
_RULE_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def route_template(rule: str) -> str:
    """``/students/<id:student_id>`` → ``/students/{student_id}`` (OpenAPI's, and the audit's, route)."""
    return _RULE_PARAM.sub(r"{\1}", rule)


class JsonHttpEntrypoint(HttpRequestHandler):
    """``@http(method, url, scope="students:read", errors=(StudentNotFound, ...))``.

    ``scope`` is the API key scope the route needs (:data:`gateway.access.keys.SCOPES`),
    or :data:`PUBLIC`; it is checked (with the key and its rate limit) before a worker
    is spawned, and changes and refusals are written to the audit trail. ``errors``
    names the error types the route answers with, documented by :mod:`gateway.openapi`
    with the status this table gives them (the door's own errors are added for
    every route that needs a key)."""

    server = JsonWebServer()
    gate = AccessGate()
    documented = True  # in the OpenAPI document (the console's HTML pages are not)

    def __init__(self, method: str, url: str, scope: str, errors: tuple[type[ServiceError], ...] = (), **kwargs):
        self.scope = scope
        self.errors = tuple(errors) if scope == PUBLIC else (*errors, *ACCESS_ERRORS)
        self.route = route_template(url)
        super().__init__(method, url, **kwargs)

    def handle_request(self, request: Request) -> Response:
        started = time.perf_counter()
        correlation_id = correlation_id_of(request)
        request.principal, request.correlation_id = None, correlation_id
        request.span = tracing.start(
            f"{request.method} {self.route}",
            tracing.SERVER,
            parent=tracing.extract(request.headers) if tracing.enabled() else None,  # a caller's trace goes on
            attributes=self._span_attributes(request),
        )
        try:
            response = self._handle(request)
        except BaseException as exc:
            tracing.end([request.span], exc)
            raise
        if request.span is not None:
            request.span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                tracing.fail(request.span, str(response.status_code))
            tracing.end([request.span])
        metrics.observe_http(request.method, self.route, response.status_code, time.perf_counter() - started)
        return response

    def _span_attributes(self, request: Request) -> dict | None:
        if not tracing.enabled():
            return None
        return {
            "http.request.method": request.method,
            "http.route": self.route,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "mensageria.correlation_id": request.correlation_id,
        }

    def admit(self, request: Request) -> tuple[Any, Any]:
        """``(principal, rate-limit verdict)`` of a request to a secured route, or :class:`AccessDenied`."""
        return self.gate.admit(request.headers.get("Authorization"), self.scope)

    def refusal(self, request: Request, exc: AccessDenied) -> Response:
        """The answer to a request :meth:`admit` refused."""
        return error_response(exc)

    def _handle(self, request: Request) -> Response:
        correlation_id = request.correlation_id
        limit_headers: dict[str, str] = {}
        if self.scope == PUBLIC:
            response = super().handle_request(request)
        else:
            try:
                request.principal, verdict = self.admit(request)
                limit_headers = verdict.headers()
            except AccessDenied as exc:
                request.principal = exc.principal
                response = self.refusal(request, exc)
            else:
                response = super().handle_request(request)
        response.headers.update(limit_headers)
        response.headers["X-Request-Id"] = correlation_id
        response.headers[PROCESS_HEADER] = str(os.getpid())
        if request.method in CHANGES or response.status_code in AUDITED_REFUSALS:
            self.gate.record(self._audit_entry(request, response))
        return response

    def _audit_entry(self, request: Request, response: Response) -> dict:
        return audit_entry(
            request.principal,
            _on_behalf_of(request),
            request.method,
            self.route,
            _targets(request, response),
            response.status_code,
            request.correlation_id,
        )

    def response_from_exception(self, exc: Exception) -> Response:
        return error_response(exc)

    def check_signature(self, args: tuple, kwargs: dict) -> None:
        """nameko's check (``inspect.getcallargs`` on every request), from a signature worked out once."""
        try:
            self._signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from None

    @functools.cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(getattr(self.container.service_cls, self.method_name))


def _on_behalf_of(request: Request) -> str | None:
    value = (request.headers.get("X-Actor") or "").strip(" \t")
    return value[:200] if value and value.isprintable() else None


def _targets(request: Request, response: Response) -> dict:
    """What a request was about: its path's ids, and the ids its (JSON, 2xx) answer names."""
    targets = dict(getattr(request, "path_values", None) or {})
    if 200 <= response.status_code < 300 and response.mimetype == "application/json" and not response.is_streamed:
        try:
            body = orjson.loads(response.get_data())
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            targets.update({name: body[name] for name in TARGET_FIELDS if isinstance(body.get(name), int | str)})
    return targets


http = JsonHttpEntrypoint.decorator
