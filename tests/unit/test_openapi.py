"""The generated OpenAPI document matches the gateway's routes and error table."""

from __future__ import annotations

import json

import pytest

from gateway.entrypoints import ERROR_STATUSES
from gateway.openapi import build_spec, openapi_path, routes

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}

# which documented error response each status must use
ERROR_RESPONSE_FOR_STATUS = {
    "400": "MalformedJson",
    "404": "NotFound",
    "409": "Conflict",
    "412": "PreconditionFailed",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "422": "ValidationError",
    "503": "ServiceUnavailable",
    "504": "Timeout",
}


@pytest.fixture(scope="module")
def spec() -> dict:
    document = build_spec()
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
    ],
)
def test_openapi_path(rule, path):
    assert openapi_path(rule) == path


def test_every_route_is_documented_with_its_method(spec):
    expected = {(openapi_path(rule), method.lower()) for method, rule, _ in routes()}
    documented = {(path, method) for path, method, _ in operations(spec)}

    assert len(expected) == len(routes()) > 0
    assert documented == expected


def test_every_operation_has_an_id_and_responses(spec):
    ids = [operation["operationId"] for _, _, operation in operations(spec)]

    assert len(ids) == len(set(ids))
    assert all(operation["responses"] for _, _, operation in operations(spec))


def test_response_codes_are_success_or_in_the_error_table(spec):
    error_statuses = {str(status) for _, status in ERROR_STATUSES}
    codes = {str(code) for _, _, op in operations(spec) for code in op["responses"]}

    assert codes - error_statuses == {code for code in codes if code.startswith("2")}


def test_error_codes_use_the_matching_error_response(spec):
    for path, method, operation in operations(spec):
        for code, response in operation["responses"].items():
            if str(code).startswith("2"):
                continue
            name = ERROR_RESPONSE_FOR_STATUS[str(code)]
            assert response == {"$ref": f"#/components/responses/{name}"}, (method, path, code)


def test_error_responses_carry_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "details"}
    for name, response in spec["components"]["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert resolve(spec, schema["$ref"]) is error, name


def test_every_ref_resolves(spec):
    found = list(refs(spec))

    assert found
    for ref in found:
        resolve(spec, ref)
