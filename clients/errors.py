"""The pika client's errors, and the one table that maps nameko's wire errors to them.

A Nameko service that raises answers with ``{"exc_type", "exc_path", "exc_args",
"value"}`` (``nameko.exceptions.serialize``). This client does not import the
services (they pull in nameko and eventlet), so it has classes of its own with
the same names, codes and ``details`` as ``services.exceptions``::

    try:
        client.students.get_student(42)
    except StudentNotFound as exc:
        print(exc.code, exc.details)   # STUDENT_NOT_FOUND {'student_id': 42}

Every error has ``.code`` (UPPER_SNAKE), ``.message`` and ``.details`` (a dict); one
raised by an RPC call also has the call's ``.correlation_id``.
Errors raised on the far side derive from :class:`RemoteError` (which also keeps
``exc_type``, ``exc_path`` and ``exc_args``); an error path not in
:data:`REMOTE_ERRORS` arrives as a plain :class:`RemoteError`.
"""

from __future__ import annotations

import json
from typing import Any


class ClientError(Exception):
    """Base of every error this client raises."""

    code = "CLIENT_ERROR"
    correlation_id: str | None = None  # of the call that raised it (set by RpcClient.call)

    def __init__(self, message: str = "", details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The error as the gateway's JSON error body would carry it."""
        return {"error": self.code, "message": self.message, "details": self.details}


class BrokerError(ClientError):
    """The broker refused an operation (a channel error, a nacked publish)."""

    code = "BROKER_ERROR"


class BrokerUnavailable(BrokerError):
    """No connection to the broker, or it was lost during the operation.

    If it was lost after a request was published, the request may or may not
    have been executed. The next call opens a fresh connection.
    """

    code = "BROKER_UNAVAILABLE"


class UnknownService(ClientError):
    """No queue is bound for ``service.method``: the service has never run on this broker."""

    code = "UNKNOWN_SERVICE"


class RpcTimeout(ClientError):
    """No reply within the timeout (the service's queue exists but nobody answered in time)."""

    code = "RPC_TIMEOUT"


class UnroutableEvent(ClientError):
    """A mandatory event reached no queue: nothing subscribes to it, so it was not stored."""

    code = "UNROUTABLE_EVENT"


class RemoteError(ClientError):
    """An exception raised by the remote method (or by nameko on its behalf)."""

    code = "REMOTE_ERROR"

    def __init__(
        self,
        message: str = "",
        details: dict[str, Any] | None = None,
        *,
        exc_type: str | None = None,
        exc_path: str | None = None,
        exc_args: list | None = None,
    ):
        super().__init__(message, details)
        self.exc_type = exc_type
        self.exc_path = exc_path
        self.exc_args = exc_args or []

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RemoteError:
        """Build the error from nameko's serialized exception."""
        exc_type = payload.get("exc_type") or "Exception"
        value = str(payload.get("value") or "")
        exc_args = list(payload.get("exc_args") or [])
        return cls(
            cls._message(exc_type, value),
            _details(exc_args),
            exc_type=exc_type,
            exc_path=payload.get("exc_path"),
            exc_args=exc_args,
        )

    @staticmethod
    def _message(exc_type: str, value: str) -> str:
        return f"{exc_type}: {value}" if value else exc_type


class BadRequest(RemoteError):
    """Nameko refused the call before running the method."""

    code = "BAD_REQUEST"


class MethodNotFound(BadRequest):
    code = "METHOD_NOT_FOUND"


class IncorrectSignature(BadRequest):
    code = "INCORRECT_SIGNATURE"


class ServiceError(RemoteError):
    """A deliberate error of a mensageria service (``services.exceptions.ServiceError``)."""

    code = "SERVICE_ERROR"

    @staticmethod
    def _message(exc_type: str, value: str) -> str:
        return value or exc_type


class ValidationFailed(ServiceError):
    """Bad arguments; ``details`` maps each field to its messages."""

    code = "VALIDATION_ERROR"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class StudentNotFound(NotFound):
    code = "STUDENT_NOT_FOUND"


class StatusRequestNotFound(NotFound):
    code = "STATUS_REQUEST_NOT_FOUND"


class Conflict(ServiceError):
    code = "CONFLICT"


class EmailAlreadyExists(Conflict):
    code = "EMAIL_ALREADY_EXISTS"


class VersionMismatch(Conflict):
    code = "VERSION_MISMATCH"


class IdempotencyKeyReused(Conflict):
    code = "IDEMPOTENCY_KEY_REUSED"


class CertificateNotFound(NotFound):
    code = "CERTIFICATE_NOT_FOUND"


class StatusListNotFound(NotFound):
    code = "STATUS_LIST_NOT_FOUND"


class NotificationNotFound(NotFound):
    code = "NOTIFICATION_NOT_FOUND"


class JobNotFound(NotFound):
    code = "JOB_NOT_FOUND"


class JobUploadSuperseded(Conflict):
    """Another upload with the same idempotency key replaced this one before it completed."""

    code = "JOB_UPLOAD_SUPERSEDED"


class BackendTimeout(ServiceError):
    """A service the called one needed did not answer in time (not this client's :class:`RpcTimeout`)."""

    code = "BACKEND_TIMEOUT"


class ServiceUnavailable(ServiceError):
    """The broker or a service the called one needs was not reachable from it."""

    code = "SERVICE_UNAVAILABLE"


# exc_path on the wire -> the class raised here. The one place that knows both sides;
# tests/unit/test_client_errors.py keeps it in step with services/exceptions.py.
class MalformedRequest(ServiceError, BadRequest):
    """The service refused the message before decoding it: too large, not JSON, or not
    ``{"args": [...], "kwargs": {...}}`` (mensageria's guard, or nameko's own check)."""

    code = "MALFORMED_REQUEST"


REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    "services.exceptions.ServiceError": ServiceError,
    "services.exceptions.ValidationFailed": ValidationFailed,
    "services.exceptions.NotFound": NotFound,
    "services.exceptions.StudentNotFound": StudentNotFound,
    "services.exceptions.StatusRequestNotFound": StatusRequestNotFound,
    "services.exceptions.Conflict": Conflict,
    "services.exceptions.EmailAlreadyExists": EmailAlreadyExists,
    "services.exceptions.VersionMismatch": VersionMismatch,
    "services.exceptions.IdempotencyKeyReused": IdempotencyKeyReused,
    "services.exceptions.CertificateNotFound": CertificateNotFound,
    "services.exceptions.StatusListNotFound": StatusListNotFound,
    "services.exceptions.NotificationNotFound": NotificationNotFound,
    "services.exceptions.JobNotFound": JobNotFound,
    "services.exceptions.JobUploadSuperseded": JobUploadSuperseded,
    "services.exceptions.BackendTimeout": BackendTimeout,
    "services.exceptions.ServiceUnavailable": ServiceUnavailable,
    "services.exceptions.MalformedRequest": MalformedRequest,
    "nameko.exceptions.MethodNotFound": MethodNotFound,
    "nameko.exceptions.IncorrectSignature": IncorrectSignature,
    "nameko.exceptions.MalformedRequest": MalformedRequest,
}


def remote_error(payload: dict[str, Any]) -> RemoteError:
    """The typed error for a reply's ``error`` payload."""
    return REMOTE_ERRORS.get(payload.get("exc_path") or "", RemoteError).from_payload(payload)


def _details(exc_args: list) -> dict[str, Any]:
    # services.exceptions.ServiceError carries its details as a JSON object in args[1]
    if len(exc_args) > 1 and isinstance(exc_args[1], str):
        try:
            details = json.loads(exc_args[1])
        except ValueError:
            return {}
        return details if isinstance(details, dict) else {}
    return {}
