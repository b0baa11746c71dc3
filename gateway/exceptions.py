"""Errors the gateway raises itself (the services' errors come typed from
:mod:`services.exceptions`). All share the ``code``/``message``/``details``
shape, so one table maps every error to an HTTP status."""

from __future__ import annotations

from services.exceptions import BackendTimeout, NotFound, ServiceError, ServiceUnavailable

__all__ = [
    "BackendTimeout",
    "MalformedJson",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RouteNotFound",
    "ServiceUnavailable",
    "UnsupportedMediaType",
]


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
