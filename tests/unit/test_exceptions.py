"""Service errors cross the RPC boundary as the same class, with typed details."""

from __future__ import annotations

import inspect
import json

import pytest
from nameko.exceptions import RemoteError, deserialize, serialize

from services import exceptions
from services.exceptions import (
    BackendTimeout,
    CertificateNotFound,
    EmailAlreadyExists,
    IdempotencyKeyReused,
    JobNotFound,
    JobUploadSuperseded,
    MalformedRequest,
    NotificationNotFound,
    ServiceError,
    ServiceUnavailable,
    StatusListNotFound,
    StatusRequestNotFound,
    StudentNotFound,
    ValidationFailed,
    VersionMismatch,
)

RAISED_BY_SERVICES = [
    (ValidationFailed, "VALIDATION_ERROR"),
    (StudentNotFound, "STUDENT_NOT_FOUND"),
    (StatusRequestNotFound, "STATUS_REQUEST_NOT_FOUND"),
    (EmailAlreadyExists, "EMAIL_ALREADY_EXISTS"),
    (VersionMismatch, "VERSION_MISMATCH"),
    (IdempotencyKeyReused, "IDEMPOTENCY_KEY_REUSED"),
    (CertificateNotFound, "CERTIFICATE_NOT_FOUND"),
    (NotificationNotFound, "NOTIFICATION_NOT_FOUND"),
    (StatusListNotFound, "STATUS_LIST_NOT_FOUND"),
    (BackendTimeout, "BACKEND_TIMEOUT"),
    (ServiceUnavailable, "SERVICE_UNAVAILABLE"),
    (JobNotFound, "JOB_NOT_FOUND"),
    (JobUploadSuperseded, "JOB_UPLOAD_SUPERSEDED"),
    (MalformedRequest, "MALFORMED_REQUEST"),
]

DETAILS = {
    "student_id": 42,
    "expected_version": 3,
    "ratio": 0.5,
    "ok": True,
    "missing": None,
    "fields": {"email": ["Not a valid email address."]},
    "ids": [1, 2, 3],
}


def over_the_wire(exc: Exception) -> Exception:
    return deserialize(json.loads(json.dumps(serialize(exc))))


def _leaf_errors() -> set[type]:
    defined = {
        cls
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, ServiceError) and cls.__module__ == exceptions.__name__
    }
    return {cls for cls in defined if not any(other is not cls and issubclass(other, cls) for other in defined)}


def test_table_names_every_concrete_service_error():
    assert {cls for cls, _ in RAISED_BY_SERVICES} == _leaf_errors()


@pytest.mark.parametrize(("cls", "code"), RAISED_BY_SERVICES)
def test_round_trip_keeps_class_code_message_and_details(cls, code):
    original = cls("Something went wrong.", DETAILS)

    received = over_the_wire(original)

    assert type(received) is cls
    assert received.code == code
    assert received.message == "Something went wrong."
    assert str(received) == "Something went wrong."
    assert received.details == DETAILS
    assert type(received.details["student_id"]) is int
    assert received.to_dict() == {"error": code, "message": "Something went wrong.", "details": DETAILS}


@pytest.mark.parametrize(("cls", "code"), RAISED_BY_SERVICES)
def test_round_trip_without_details(cls, code):
    received = over_the_wire(cls("No details."))

    assert type(received) is cls
    assert received.details == {}


def test_unregistered_error_becomes_remote_error():
    received = over_the_wire(ValueError("boom"))

    assert isinstance(received, RemoteError)
    assert received.exc_type == "ValueError"
