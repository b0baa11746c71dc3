"""The generated OpenAPI document matches the gateway's routes and error table."""

from __future__ import annotations

import io
import json
import re

import jsonschema_rs
import pytest

from gateway import bulk
from gateway.entrypoints import ERROR_STATUSES, http, status_of
from gateway.exceptions import RouteNotFound
from gateway.openapi import CSV_UPLOAD, HEADERS, build_spec, error_responses, openapi_path, routes
from gateway.service import GatewayService
from services.exceptions import StudentNotFound, ValidationFailed
from services.infra.pagination import encode_cursor

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


@pytest.fixture(scope="module")
def spec() -> dict:
    document = build_spec(GatewayService)
    json.dumps(document)  # served as JSON: must serialise as is
    return document


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(spec: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ("/students", "/students"),
        ("/students/<id:student_id>", "/students/{student_id}"),
        ("/students/<int(min=1):student_id>/status", "/students/{student_id}/status"),
        ("/status-requests/<request_id>", "/status-requests/{request_id}"),
        ("/jobs/<uuid:job_id>", "/jobs/{job_id}"),
    ],
)
def test_openapi_path(rule, path):
    assert openapi_path(rule) == path


def test_every_route_is_documented_with_its_method(spec):
    found = routes(GatewayService)
    expected = {(openapi_path(route.rule), route.method.lower()) for route in found}
    documented = {(path, method) for path, method, _ in operations(spec)}

    assert len(expected) == len(found) > 0
    assert documented == expected


def test_every_operation_has_an_id_and_responses(spec):
    ids = [operation["operationId"] for _, _, operation in operations(spec)]

    assert len(ids) == len(set(ids))
    assert all(operation["responses"] for _, _, operation in operations(spec))


def test_response_codes_are_success_or_in_the_error_table(spec):
    error_statuses = {str(status) for _, status in ERROR_STATUSES}
    codes = {str(code) for _, _, op in operations(spec) for code in op["responses"]}

    assert codes - error_statuses == {code for code in codes if code.startswith(("2", "3"))}


def test_error_responses_document_each_route_error_at_its_table_status(spec):
    for route in routes(GatewayService):
        operation = spec["paths"][openapi_path(route.rule)][route.method.lower()]
        documented = {
            (status, code)
            for status, response in operation["responses"].items()
            if status.startswith(("4", "5"))
            for code in response["content"]["application/json"]["examples"]
        }
        assert documented == {(str(status_of(t)), t.code) for t in route.errors}, (route.method, route.rule)


def test_error_responses_carry_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "details"}
    for path, method, operation in operations(spec):
        for code, response in operation["responses"].items():
            if not code.startswith(("4", "5")):
                continue
            content = response["content"]["application/json"]
            assert resolve(spec, content["schema"]["$ref"]) is error, (method, path, code)
            assert response["description"], (method, path, code)
            for name, example in content["examples"].items():
                assert example["value"] == {"error": name, "message": example["summary"], "details": {}}


def test_error_responses_group_errors_by_status():
    responses = error_responses([StudentNotFound, ValidationFailed, RouteNotFound])

    assert sorted(responses) == [404, 422]
    assert sorted(responses[404]["content"]["application/json"]["examples"]) == ["NOT_FOUND", "STUDENT_NOT_FOUND"]
    assert "VALIDATION_ERROR" in responses[422]["description"]


def test_an_error_response_written_in_a_docstring_is_refused():
    class Service:
        @http("GET", "/thing", scope="students:read", errors=(StudentNotFound,))
        def thing(self, request):
            """A thing.
            ---
            get:
              responses:
                200: {description: The thing.}
                404: {description: No such thing.}
            """

    with pytest.raises(ValueError, match="errors="):
        build_spec(Service)


def test_every_ref_resolves(spec):
    found = list(refs(spec))

    assert found
    for ref in found:
        resolve(spec, ref)


# --- the document says what the gateway accepts ---------------------------------

REQUEST_SCHEMAS = ["StudentCreate", "StudentUpdate", "ListStudents", "StatusChangeBody", "HistoryQuery"]
REQUEST_SCHEMAS += ["CompletionBody", "JobRow", "RevocationBody", "KeyCreate", "AuditQuery"]


def patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern":
                yield value
            else:
                yield from patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from patterns(value)


def _types(schema: dict) -> list[str]:
    """A schema's types: OpenAPI 3.1 writes a nullable string as ``["string", "null"]``."""
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else kind


@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
def test_every_text_field_of_a_request_says_what_it_accepts(spec, name):
    """Every string a request carries has a pattern (or an enum): controls are refused,
    a cursor has a shape, an e-mail its form."""
    properties = spec["components"]["schemas"][name]["properties"]
    texts = {field: schema for field, schema in properties.items() if "string" in _types(schema)}

    assert texts
    assert [field for field, schema in texts.items() if "pattern" not in schema and "enum" not in schema] == []


def test_the_headers_a_route_reads_are_documented_with_their_rules(spec):
    parameters = spec["components"]["parameters"]
    for name, header in HEADERS.items():
        documented = parameters[name]
        assert (documented["in"], documented["name"]) == ("header", header.name)
        assert documented["schema"]["pattern"] == next(
            v.regex.pattern for v in header.field.validators if hasattr(v, "regex")
        )
    reads = {
        ("/students/{student_id}", "patch"): {"IfMatch"},
        ("/students/{student_id}/status", "post"): {"IdempotencyKey", "Actor"},
        ("/students/{student_id}/completion", "post"): {"IdempotencyKey", "Actor"},
        ("/api/v1/certificate/", "post"): {"IdempotencyKey", "Actor"},
        ("/status-requests/bulk", "post"): {"IdempotencyKey", "Actor"},
    }
    for (path, method), names in reads.items():
        referred = {ref.rsplit("/", 1)[1] for ref in refs(spec["paths"][path][method].get("parameters", []))}
        assert names <= referred, (method, path)


SAMPLES = [
    "",
    "Ana",
    " Ana Lima ",
    "Ana\nLima",
    "Ana\x86",
    "\t",
    "王小明",
    "Zoë 👩🏽\u200d🔬",
    "\u3000",
    "a\u2028b",
    "ana@example.com",
    "0@0.a",
    "joão@escola.pt",
    '"3"',
    'W/"12"',
    "3",
    "soon",
    encode_cursor(1),
    encode_cursor(2147483647),
    "garbage",
    CSV_UPLOAD["example"],
    "status,student_id\n",
]


def test_patterns_read_alike_in_python_and_in_a_json_schema_validator(spec):
    """The server matches a pattern whole with Python's ``re``; a client's validator
    reads it as ECMA-262 (here: jsonschema-rs, which schemathesis uses)."""
    found = set(patterns(spec))
    assert len(found) >= 6
    for pattern in found:
        validator = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
        for sample in SAMPLES:
            assert validator.is_valid(sample) == bool(re.fullmatch(pattern, sample)), (pattern[:60], sample)


def test_a_student_update_names_one_field_at_least(spec):
    assert spec["components"]["schemas"]["StudentUpdate"]["minProperties"] == 1


def test_the_legacy_endpoint_documents_the_student_it_returns(spec):
    response = spec["paths"]["/api/v1/certificate/"]["post"]["responses"]["202"]
    schema = resolve(spec, response["content"]["application/json"]["schema"]["$ref"])

    assert {"request_id", "state", "student"} <= set(schema["properties"])


def test_a_status_request_may_say_it_is_still_queued(spec):
    assert spec["components"]["schemas"]["StatusRequest"]["properties"]["queued"]["type"] == "boolean"


def test_the_csv_example_is_an_upload_the_reader_takes(spec):
    upload = spec["components"]["schemas"]["CsvUpload"]
    example = upload["example"]

    assert re.fullmatch(upload["pattern"], example)
    rows = list(bulk.read_rows(io.BytesIO(example.encode()), bulk.CSV, max_rows=10, max_bytes=1000))
    assert [type(row) for row in rows] == [bulk.BulkRow]
