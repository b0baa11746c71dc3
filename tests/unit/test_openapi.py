"""The generated OpenAPI document matches the gateway's routes and error table."""

from __future__ import annotations

import json

import pytest

from gateway.entrypoints import ERROR_STATUSES, http, status_of
from gateway.exceptions import RouteNotFound
from gateway.openapi import build_spec, error_responses, openapi_path, routes
from gateway.service import GatewayService
from services.exceptions import StudentNotFound, ValidationFailed

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

    assert codes - error_statuses == {code for code in codes if code.startswith("2")}


def test_error_responses_document_each_route_error_at_its_table_status(spec):
    for route in routes(GatewayService):
        operation = spec["paths"][openapi_path(route.rule)][route.method.lower()]
        documented = {
            (status, code)
            for status, response in operation["responses"].items()
            if not status.startswith("2")
            for code in response["content"]["application/json"]["examples"]
        }
        assert documented == {(str(status_of(t)), t.code) for t in route.errors}, (route.method, route.rule)


def test_error_responses_carry_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message", "details"}
    for path, method, operation in operations(spec):
        for code, response in operation["responses"].items():
            if code.startswith("2"):
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
        @http("GET", "/thing", errors=(StudentNotFound,))
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
