"""Errors the gateway raises itself (the services' errors come typed from
:mod:`services.exceptions`). All share the ``code``/``message``/``details``
shape, so one table maps every error to an HTTP status."""

from __future__ import annotations

from services.exceptions import NotFound, ServiceError


class MalformedJson(ServiceError):
    code = "MALFORMED_JSON"


class UnsupportedMediaType(ServiceError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class PayloadTooLarge(ServiceError):
    code = "PAYLOAD_TOO_LARGE"


class RouteNotFound(NotFound):
    code = "NOT_FOUND"


class MethodNotAllowed(ServiceError):
    code = "METHOD_NOT_ALLOWED"


class BackendTimeout(ServiceError):
    code = "BACKEND_TIMEOUT"


class ServiceUnavailable(ServiceError):
    code = "SERVICE_UNAVAILABLE"
