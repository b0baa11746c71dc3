"""Errors the gateway raises itself (the services' errors come typed from
:mod:`services.exceptions`). All share the ``code``/``message``/``details``
shape, so one table maps every error to an HTTP status. A class's first
docstring line describes it in the OpenAPI document."""

from __future__ import annotations

from services.exceptions import BackendTimeout, NotFound, ServiceError, ServiceUnavailable

__all__ = [
    "ACCESS_ERRORS",
    "BACKEND_ERRORS",
    "AccessDenied",
    "ApiKeyNotFound",
    "BackendTimeout",
    "InsufficientScope",
    "InvalidApiKey",
    "MalformedJson",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RateLimited",
    "RouteNotFound",
    "ServiceUnavailable",
    "Unauthenticated",
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


class AccessDenied(ServiceError):
    """Base of the errors that refuse a request at the door; they may carry response headers
    and, once the key is known, who was refused (for the audit trail)."""

    code = "ACCESS_DENIED"

    def __init__(self, message: str, details: dict | None = None, principal=None, verdict=None):
        super().__init__(message, details)
        self.principal = principal
        self.headers: dict[str, str] = verdict.headers() if verdict is not None else {}


class Unauthenticated(AccessDenied):
    """No API key, or an ``Authorization`` header that does not hold one (``Bearer msk_...``)."""

    code = "UNAUTHENTICATED"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message, details)
        self.headers = {"WWW-Authenticate": 'Bearer realm="mensageria"'}


class InvalidApiKey(AccessDenied):
    """The API key is unknown, revoked or expired (one answer for all three)."""

    code = "INVALID_API_KEY"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message, details)
        self.headers = {"WWW-Authenticate": 'Bearer realm="mensageria", error="invalid_token"'}


class InsufficientScope(AccessDenied):
    """The API key lacks the scope this route needs (``details.required_scope``)."""

    code = "INSUFFICIENT_SCOPE"


class RateLimited(AccessDenied):
    """Too many requests with this key; ``Retry-After`` says when to try again."""

    code = "RATE_LIMITED"


class ApiKeyNotFound(NotFound):
    """No API key with this id."""

    code = "API_KEY_NOT_FOUND"


# what every route but the public ones may answer at the door
ACCESS_ERRORS = (Unauthenticated, InvalidApiKey, InsufficientScope, RateLimited)
