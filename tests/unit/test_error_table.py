"""The gateway's one error table: every error type → HTTP status and JSON body."""

from __future__ import annotations

import json
import traceback

import pytest
from nameko.exceptions import IncorrectSignature, MalformedRequest

from gateway.entrypoints import error_response
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
    EmailAlreadyExists,
    IdempotencyKeyReused,
    StatusRequestNotFound,
    StudentNotFound,
    ValidationFailed,
    VersionMismatch,
)

DETAILS = {"student_id": 7, "fields": ["a", "b"]}


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (MalformedJson("m", DETAILS), 400, "MALFORMED_JSON"),
        (StudentNotFound("m", DETAILS), 404, "STUDENT_NOT_FOUND"),
        (StatusRequestNotFound("m", DETAILS), 404, "STATUS_REQUEST_NOT_FOUND"),
        (RouteNotFound("m", DETAILS), 404, "NOT_FOUND"),
        (MethodNotAllowed("m", DETAILS), 405, "METHOD_NOT_ALLOWED"),
        (EmailAlreadyExists("m", DETAILS), 409, "EMAIL_ALREADY_EXISTS"),
        (IdempotencyKeyReused("m", DETAILS), 409, "IDEMPOTENCY_KEY_REUSED"),
        (VersionMismatch("m", DETAILS), 412, "VERSION_MISMATCH"),
        (PayloadTooLarge("m", DETAILS), 413, "PAYLOAD_TOO_LARGE"),
        (UnsupportedMediaType("m", DETAILS), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (ValidationFailed("m", DETAILS), 422, "VALIDATION_ERROR"),
        (ServiceUnavailable("m", DETAILS), 503, "SERVICE_UNAVAILABLE"),
        (BackendTimeout("m", DETAILS), 504, "BACKEND_TIMEOUT"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_error_response(exc, status, code):
    response = error_response(exc)

    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == {"error": code, "message": "m", "details": DETAILS}


@pytest.mark.parametrize("exc", [IncorrectSignature("get_student() takes 2 args"), MalformedRequest("bad")])
def test_rpc_signature_errors_are_not_found(exc):
    """A path value the RPC method cannot take is a missing resource, not a 500."""
    response = error_response(exc)

    assert response.status_code == 404
    assert json.loads(response.get_data())["error"] == "NOT_FOUND"


def test_unexpected_error_is_500_without_traceback(caplog):
    try:
        raise KeyError("secret-internal-detail")
    except KeyError as exc:
        error = exc
        trace = "".join(traceback.format_exception(exc))

    response = error_response(error)

    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert json.loads(body) == {"error": "INTERNAL_ERROR", "message": "Internal error.", "details": {}}
    assert "secret-internal-detail" not in body
    assert "Traceback" not in body and "Traceback" in trace
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)
