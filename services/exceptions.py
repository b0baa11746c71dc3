"""Typed errors that cross the RPC boundary.

Every error a service raises on purpose derives from :class:`ServiceError` and is
registered with nameko for deserialization, so a caller that imports this module
(a Nameko service, the gateway, ``nameko shell``) catches the same class the
service raised, with its ``code``, ``message`` and ``details`` intact::

    try:
        n.rpc.students.get_student(42)
    except StudentNotFound as exc:
        print(exc.code, exc.details)   # STUDENT_NOT_FOUND {'student_id': 42}
"""

from __future__ import annotations

import json
from typing import Any

from nameko.exceptions import deserialize_to_instance


class ServiceError(Exception):
    """Base of every deliberate service error: a stable code, a message, details."""

    code = "SERVICE_ERROR"

    def __init__(self, message: str = "", details: dict[str, Any] | str | None = None):
        # nameko rebuilds a remote exception from ``exc.args`` and stringifies
        # non-string values on the way: carry details as JSON to keep their types
        if not isinstance(details, str):
            details = json.dumps(details or {}, default=str)
        super().__init__(message, details)

    @property
    def message(self) -> str:
        return self.args[0]

    @property
    def details(self) -> dict[str, Any]:
        return json.loads(self.args[1])

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


@deserialize_to_instance
class ValidationFailed(ServiceError):
    """Input violates a schema; ``details`` maps each field to its messages."""

    code = "VALIDATION_ERROR"


class NotFound(ServiceError):
    code = "NOT_FOUND"


@deserialize_to_instance
class StudentNotFound(NotFound):
    code = "STUDENT_NOT_FOUND"


@deserialize_to_instance
class StatusRequestNotFound(NotFound):
    code = "STATUS_REQUEST_NOT_FOUND"


class Conflict(ServiceError):
    code = "CONFLICT"


@deserialize_to_instance
class EmailAlreadyExists(Conflict):
    code = "EMAIL_ALREADY_EXISTS"


@deserialize_to_instance
class VersionMismatch(Conflict):
    """``expected_version`` no longer matches: someone else changed the record."""

    code = "VERSION_MISMATCH"


@deserialize_to_instance
class CertificateNotFound(NotFound):
    code = "CERTIFICATE_NOT_FOUND"


@deserialize_to_instance
class StatusListNotFound(NotFound):
    """No credential status list has this number."""

    code = "STATUS_LIST_NOT_FOUND"


@deserialize_to_instance
class NotificationNotFound(NotFound):
    code = "NOTIFICATION_NOT_FOUND"


@deserialize_to_instance
class BackendTimeout(ServiceError):
    """A service this one called did not answer within ``RPC_TIMEOUT``."""

    code = "BACKEND_TIMEOUT"


@deserialize_to_instance
class ServiceUnavailable(ServiceError):
    """The broker or a service this one needs is not reachable."""

    code = "SERVICE_UNAVAILABLE"


@deserialize_to_instance
class IdempotencyKeyReused(Conflict):
    """The idempotency key was already used for a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"


@deserialize_to_instance
class JobNotFound(NotFound):
    code = "JOB_NOT_FOUND"


@deserialize_to_instance
class JobUploadSuperseded(Conflict):
    """Another upload with the same idempotency key replaced this one before it completed."""

    code = "JOB_UPLOAD_SUPERSEDED"


@deserialize_to_instance
class MalformedRequest(ServiceError):
    """An AMQP message refused before decoding: too large, not JSON, or not an RPC request."""

    code = "MALFORMED_REQUEST"
