"""The gateway's OpenAPI 3 document, generated from its routes and the
services' marshmallow schemas.

Paths and methods come from the ``@http`` entrypoints themselves; each
handler's docstring (after ``---``) holds its operation, so a route cannot
exist without its documentation (``tests/unit/test_openapi.py`` checks that).
"""

from __future__ import annotations

import re
from functools import lru_cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from marshmallow import Schema, fields

from services import schemas


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"example": "VALIDATION_ERROR"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


SCHEMAS = {
    "Error": ErrorSchema,
    "Student": schemas.StudentSchema,
    "StudentCreate": schemas.StudentCreateSchema,
    "StudentUpdate": schemas.StudentUpdateSchema,
    "StudentPage": schemas.StudentPageSchema,
    "ListStudents": schemas.ListStudentsSchema,
    "StatusChangeBody": schemas.StatusChangeBodySchema,
    "StatusRequest": schemas.StatusRequestSchema,
    "HistoryPage": schemas.HistoryPageSchema,
    "HistoryQuery": schemas.HistoryQuerySchema,
    "Certificate": schemas.CertificateSchema,
    "CompletionBody": schemas.CompletionBodySchema,
    "JobRow": schemas.JobRowSchema,
    "Job": schemas.JobSchema,
}

ERROR_RESPONSES = {
    "MalformedJson": "The body is not valid JSON (MALFORMED_JSON).",
    "NotFound": "No such student, request, certificate or route "
    "(STUDENT_NOT_FOUND, STATUS_REQUEST_NOT_FOUND, CERTIFICATE_NOT_FOUND, NOT_FOUND).",
    "Conflict": "Duplicate e-mail or reused idempotency key (EMAIL_ALREADY_EXISTS, IDEMPOTENCY_KEY_REUSED).",
    "PreconditionFailed": "If-Match does not name the current version (VERSION_MISMATCH).",
    "PayloadTooLarge": "The body exceeds MAX_BODY_BYTES (PAYLOAD_TOO_LARGE).",
    "UnsupportedMediaType": "The body is not application/json (UNSUPPORTED_MEDIA_TYPE).",
    "ValidationError": "Schema violations, per field in details (VALIDATION_ERROR).",
    "ServiceUnavailable": "Broker or a backend service unavailable (SERVICE_UNAVAILABLE).",
    "Timeout": "A backend service did not answer in time (BACKEND_TIMEOUT).",
}

_RULE_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """``/students/<id:student_id>`` → ``/students/{student_id}``."""
    return _RULE_PARAM.sub(r"{\1}", rule)


def routes() -> list[tuple[str, str, object]]:
    """``(method, url rule, handler)`` for every ``@http`` entrypoint of the gateway."""
    from gateway.service import GatewayService

    found = []
    for name in dir(GatewayService):
        handler = getattr(GatewayService, name)
        for entrypoint in getattr(handler, "nameko_entrypoints", ()):
            found.append((entrypoint.method, entrypoint.url, handler))
    return sorted(found, key=lambda route: (route[1], route[0]))


@lru_cache(maxsize=1)
def build_spec() -> dict:
    spec = APISpec(
        title="mensageria gateway",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Student status processing: students, status changes, history."},
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, description in ERROR_RESPONSES.items():
        spec.components.response(
            name, {"description": description, "content": {"application/json": {"schema": "ErrorSchema"}}}
        )
    spec.components.parameter(
        "StudentId", "path", {"name": "student_id", "required": True, "schema": {"type": "integer", "minimum": 1}}
    )
    by_path: dict[str, dict] = {}
    for method, rule, handler in routes():
        operations = load_operations_from_docstring(handler.__doc__ or "")
        operation = operations.get(method.lower())
        if operation is None:
            raise ValueError(f"{method} {rule} has no OpenAPI operation in its docstring")
        operation.setdefault("summary", (handler.__doc__ or "").strip().splitlines()[0])
        operation.setdefault("operationId", handler.__name__)
        by_path.setdefault(openapi_path(rule), {})[method.lower()] = operation
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
