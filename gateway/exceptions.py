"""Errors the gateway raises itself (the services' errors come typed from
:mod:`services.exceptions`). All share the ``code``/``message``/``details``
shape, so one table maps every error to an HTTP status. A class's first
docstring line describes it in the OpenAPI document."""

from __future__ import annotations

from services.exceptions import BackendTimeout, NotFound, ServiceError, ServiceUnavailable

__all__ = [
    "BACKEND_ERRORS",
    "BackendTimeout",
    "MalformedJson",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RouteNotFound",
    "ServiceUnavailable",
    "UnsupportedMediaType",
]

# what a route may answer when the broker or a service it calls fails it
BACKEND_ERRORS = (ServiceUnavailable, BackendTimeout)


class MalformedJson(ServiceError):
    """The body is not valid JSON."""

    code = "MALFORMED_JSON"


class UnsupportedMediaType(ServiceError):
    """The body is not of a media type the route accepts."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class PayloadTooLarge(ServiceError):
    """The body exceeds the route's size limit (``MAX_BODY_BYTES``, ``BULK_MAX_BYTES``)."""

    code = "PAYLOAD_TOO_LARGE"


class RouteNotFound(NotFound):
    """No such route."""

    code = "NOT_FOUND"


class MethodNotAllowed(ServiceError):
    """The route does not take this method."""

    code = "METHOD_NOT_ALLOWED"
