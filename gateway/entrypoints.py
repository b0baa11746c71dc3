"""The gateway's HTTP entrypoint and its one error table.

Every exception, raised here or received typed from a service, becomes
``{"error": CODE, "message": ..., "details": {...}}`` with the status from
:data:`ERROR_STATUSES`; anything unexpected is logged and answered 500 without
a traceback.
"""

from __future__ import annotations

import json
import logging

from nameko.exceptions import BadRequest, ContainerBeingKilled, IncorrectSignature
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.routing import BaseConverter, Map
from werkzeug.wrappers import Request, Response

from gateway.exceptions import (
    BackendTimeout,
    MalformedJson,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from services.exceptions import (
    Conflict,
    NotFound,
    ServiceError,
    ValidationFailed,
    VersionMismatch,
)
from services.infra.pagination import MAX_ID

log = logging.getLogger(__name__)

# most specific first: the first matching class decides
ERROR_STATUSES: tuple[tuple[type[ServiceError], int], ...] = (
    (MalformedJson, 400),
    (NotFound, 404),
    (MethodNotAllowed, 405),
    (VersionMismatch, 412),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (ValidationFailed, 422),
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


def json_response(status: int, body: object, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(exc: Exception) -> Response:
    if isinstance(exc, IncorrectSignature | BadRequest):
        exc = RouteNotFound("No such resource.", {})
    if isinstance(exc, ContainerBeingKilled):  # this gateway is stopping: another one may answer
        exc = ServiceUnavailable("The gateway is restarting; try again.", {})
    if not isinstance(exc, ServiceError):
        log.error("unexpected error in the gateway", exc_info=exc)
        return json_response(500, {"error": "INTERNAL_ERROR", "message": "Internal error.", "details": {}})
    return json_response(status_for(exc), exc.to_dict())


class JsonWsgiApp(WsgiApp):
    """Unknown paths and wrong methods answer JSON like everything else."""

    def __call__(self, environ, start_response):
        # eventlet's server ends wsgi.input at the end of the body, chunked or not;
        # without this flag Werkzeug reads a chunked body as empty
        environ.setdefault("wsgi.input_terminated", True)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except WerkzeugMethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or ())
            response = error_response(MethodNotAllowed("Method not allowed.", {"allowed": allowed}))
            response.headers["Allow"] = ", ".join(allowed)
            return response(environ, start_response)
        except HTTPException:
            values = None
        if values is None or any(isinstance(v, int) and v > MAX_ID for v in values.values()):
            return error_response(RouteNotFound("No such resource.", {"path": request.path}))(environ, start_response)
        request.path_values = values
        return provider.handle_request(request)(environ, start_response)


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


class JsonWebServer(WebServer):
    def get_wsgi_app(self) -> JsonWsgiApp:
        return JsonWsgiApp(self)

    def make_url_map(self) -> Map:
        url_map = Map(converters={"id": IdConverter, "code": CodeConverter, "uuid": UuidConverter})
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map


class JsonHttpEntrypoint(HttpRequestHandler):
    """``@http(method, url, errors=(StudentNotFound, ...))``: ``errors`` names the
    error types the route answers with, documented by :mod:`gateway.openapi`
    with the status this table gives them."""

    server = JsonWebServer()

    def __init__(self, method: str, url: str, errors: tuple[type[ServiceError], ...] = (), **kwargs):
        self.errors = tuple(errors)
        super().__init__(method, url, **kwargs)

    def response_from_exception(self, exc: Exception) -> Response:
        return error_response(exc)


http = JsonHttpEntrypoint.decorator
