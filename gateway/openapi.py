"""The gateway's OpenAPI 3 document, generated from its routes and the
services' marshmallow schemas.

Paths and methods come from the ``@http`` entrypoints of the service class
handed to :func:`build_spec`; each handler's docstring (after ``---``) holds its
operation, so a route cannot exist without its documentation
(``tests/unit/test_openapi.py`` checks that). Error responses are not written
there: a route names the errors it answers with (``@http(..., errors=...)``),
the error table gives their statuses, and :func:`error_responses` the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import NamedTuple

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from marshmallow import Schema, fields

from gateway import bulk, http
from gateway.access import keys
from gateway.access import schemas as access_schemas
from gateway.entrypoints import PUBLIC, JsonHttpEntrypoint, route_template, status_of
from gateway.routes.certificates import RevocationBodySchema
from services import schemas
from services.exceptions import ServiceError


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"example": "VALIDATION_ERROR"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class CertificateRequestSchema(schemas.StatusRequestSchema):
    """What ``POST /api/v1/certificate/`` answers: the completion request, and the student."""

    student = fields.Nested(schemas.StudentSchema, metadata={"description": "The student found or created."})


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
    "StudentCertificate": schemas.StudentCertificateSchema,
    "CompletionBody": schemas.CompletionBodySchema,
    "JobRow": schemas.JobRowSchema,
    "Job": schemas.JobSchema,
    "CertificateRequest": CertificateRequestSchema,
    "RevocationBody": RevocationBodySchema,
    "Key": access_schemas.KeySchema,
    "CreatedKey": access_schemas.CreatedKeySchema,
    "KeyCreate": access_schemas.KeyCreateSchema,
    "KeyPage": access_schemas.KeyPageSchema,
    "AuditQuery": access_schemas.AuditQuerySchema,
    "AuditEntry": access_schemas.AuditEntrySchema,
    "AuditPage": access_schemas.AuditPageSchema,
}
# what a schema's @validates_schema checks, which apispec cannot see
SCHEMA_RULES = {"StudentUpdate": {"minProperties": 1}}
# header parameters, referred to by name in the routes' docstrings
HEADERS = {"IdempotencyKey": http.IDEMPOTENCY_KEY_HEADER, "Actor": http.ACTOR_HEADER, "IfMatch": http.IF_MATCH}
CSV_UPLOAD = {
    "type": "string",
    "pattern": bulk.CSV_PATTERN,
    "description": "A header naming student_id or email, status and optionally reason; then one row a line.",
    "example": "student_id,status,reason\n7,active,term start\n",
}

openapi_path = route_template
SECURITY_SCHEME = "apiKey"


class Route(NamedTuple):
    method: str
    rule: str
    handler: Callable
    errors: tuple[type[ServiceError], ...]
    scope: str


def routes(service: type) -> list[Route]:
    """Every ``@http`` entrypoint of ``service``, by rule then method."""
    found = []
    for name in dir(service):
        handler = getattr(service, name)
        for entrypoint in getattr(handler, "nameko_entrypoints", ()):
            if not isinstance(entrypoint, JsonHttpEntrypoint) or not entrypoint.documented:
                continue  # the console's pages, the event handlers
            found.append(Route(entrypoint.method, entrypoint.url, handler, entrypoint.errors, entrypoint.scope))
    return sorted(found, key=lambda route: (route.rule, route.method))


def error_responses(errors: Iterable[type[ServiceError]]) -> dict[int, dict]:
    """One response per status the error table gives ``errors``: the Error
    schema, with an example per error code."""
    by_status: dict[int, list[type[ServiceError]]] = {}
    for exc_type in errors:
        by_status.setdefault(status_of(exc_type), []).append(exc_type)
    return {status: _error_response(exc_types) for status, exc_types in sorted(by_status.items())}


def _error_response(exc_types: list[type[ServiceError]]) -> dict:
    examples = {
        exc_type.code: {
            "summary": describe(exc_type),
            "value": {"error": exc_type.code, "message": describe(exc_type), "details": {}},
        }
        for exc_type in exc_types
    }
    return {
        "description": " ".join(f"{exc_type.code}: {describe(exc_type)}" for exc_type in exc_types),
        "content": {"application/json": {"schema": ErrorSchema, "examples": examples}},
    }


def describe(exc_type: type[ServiceError]) -> str:
    """The first line of the class's own docstring, else its code as a sentence."""
    doc = vars(exc_type).get("__doc__")
    if doc:
        return doc.strip().splitlines()[0]
    return exc_type.code.replace("_", " ").capitalize() + "."


@lru_cache(maxsize=4)
def build_spec(service: type) -> dict:
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="mensageria gateway",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={"description": "Student status processing: students, status changes, history."},
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, SCHEMA_RULES.get(name), schema=schema)
    spec.components.schema("CsvUpload", CSV_UPLOAD)
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "msk_<id>_<secret>_<crc>",
            "description": "An API key (`python -m tools.keys create`). Scopes: "
            + "; ".join(f"`{scope}`: {meaning}" for scope, meaning in keys.SCOPES.items())
            + ".",
        },
    )
    for name, header in HEADERS.items():
        schema = marshmallow.converter.field2property(header.field)
        parameter = {"name": header.name, "schema": schema, "description": header.description}
        spec.components.parameter(name, "header", parameter)
    spec.components.parameter(
        "KeyId",
        "path",
        {"name": "key_id", "required": True, "schema": {"type": "string", "pattern": access_schemas.KEY_ID_PATTERN}},
    )
    spec.components.parameter(
        "StudentId", "path", {"name": "student_id", "required": True, "schema": {"type": "integer", "minimum": 1}}
    )
    by_path: dict[str, dict] = {}
    for route in routes(service):
        by_path.setdefault(openapi_path(route.rule), {})[route.method.lower()] = _operation(route)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(route: Route) -> dict:
    doc = route.handler.__doc__ or ""
    operation = load_operations_from_docstring(doc).get(route.method.lower())
    if operation is None:
        raise ValueError(f"{route.method} {route.rule} has no OpenAPI operation in its docstring")
    responses = operation.setdefault("responses", {})
    if any(not str(status).startswith(("2", "3")) for status in responses):
        raise ValueError(f"{route.method} {route.rule}: name its errors in @http(errors=...), not in its docstring")
    responses.update(error_responses(route.errors))
    # the scope a route needs: OpenAPI 3.1 lets a bearer scheme's requirement list it
    operation["security"] = [] if route.scope == PUBLIC else [{SECURITY_SCHEME: [route.scope]}]
    operation.setdefault("summary", doc.strip().splitlines()[0])
    operation.setdefault("operationId", route.handler.__name__)
    return operation
