"""The AsyncAPI document: valid against the official AsyncAPI 3.0.0 JSON Schema (vendored, see
gateway/static/vendor/README.md), and complete: every RPC method of every service, every event a
service publishes (found in the source) and every subscription of the topology is in it."""

from __future__ import annotations

import ast
import copy
import json
import typing
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from marshmallow import Schema
from nameko.rpc import Rpc

from gateway import asyncapi
from gateway.asyncapi import SERVICES, build_asyncapi, nullable, type_schema
from services import schemas
from services.infra.inbound import rpc
from services.infra.topology import FOLLOWS, SUBSCRIPTIONS, Subscription

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_SCHEMA = ROOT / "tests" / "vendor" / "asyncapi-specs-6.11.1" / "3.0.0-without-$id.json"


@pytest.fixture(scope="module")
def document() -> dict:
    built = build_asyncapi()
    return json.loads(json.dumps(built))  # served as JSON: must serialise as is


@pytest.fixture(scope="module")
def validator():
    return jsonschema_rs.validator_for(json.loads(ASYNCAPI_SCHEMA.read_text()))


def resolve(document: dict, ref: str, follow: bool = True) -> Any:
    """What a local ``$ref`` points to (through a reference it points to, when ``follow``)."""
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if follow and isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(document, node["$ref"])
    return node


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


# --- valid ----------------------------------------------------------------------------------


def test_the_document_is_valid_asyncapi_3(document, validator):
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message[:300]}" for e in validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["operations"]["students.get_student"].update(action="call"),
        lambda d: d["operations"]["students.get_student"]["reply"]["address"].update(location="reply_to"),
        lambda d: d["channels"]["queue.rpc-students"]["bindings"]["amqp"].update(exchange={"name": "x"}),
        lambda d: d["components"]["schemas"]["Student"].update(type="strin"),
        lambda d: d["components"]["messages"]["status.student_status_changed"].update(payload=3),
        lambda d: d["info"].pop("version"),
    ],
    ids=["action", "reply-address", "queue-and-exchange", "schema-type", "payload", "info"],
)
def test_the_schema_refuses_a_broken_document(document, validator, break_it):
    """The check is not vacuous: the schema reaches operations, bindings and payload schemas."""
    broken = copy.deepcopy(document)
    break_it(broken)
    assert not validator.is_valid(broken)


def test_every_ref_resolves(document):
    found = list(refs(document))
    assert len(found) > 100
    for ref in found:
        resolve(document, ref)


def test_operations_use_their_channels_messages(document):
    """AsyncAPI 3: an operation's messages (and its reply's) are messages of its channel."""
    for operation_id, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        assert operation["messages"], operation_id
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), (operation_id, message)
        if "reply" in operation:
            reply_channel = operation["reply"]["channel"]["$ref"]
            for message in operation["reply"]["messages"]:
                assert message["$ref"].startswith(f"{reply_channel}/messages/"), (operation_id, message)


# --- complete ---------------------------------------------------------------------------------


def rpc_entrypoints(service: type) -> set[str]:
    return {
        name
        for name in dir(service)
        if any(isinstance(e, Rpc) for e in getattr(getattr(service, name), "nameko_entrypoints", ()))
    }


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_rpc_method_is_a_request_reply_operation(document, service):
    methods = rpc_entrypoints(service)
    assert {"ping", "list_dead_letters"} <= methods
    for method in methods:
        key = f"{service.name}.{method}"
        operation = document["operations"][key]
        assert operation["action"] == "receive"
        channel = resolve(document, operation["channel"]["$ref"])
        assert channel["address"] == key  # the routing key
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "nameko-rpc"
        reply = resolve(document, operation["reply"]["messages"][0]["$ref"])
        assert set(reply["payload"]["properties"]) == {"result", "error"}
    queue = document["channels"][f"queue.rpc-{service.name}"]
    assert queue["x-binding"] == {"exchange": "nameko-rpc", "routingKey": f"{service.name}.*"}
    assert set(queue["messages"]) == methods


def test_a_new_rpc_method_appears_by_itself():
    class Echo:
        name = "echo"

        @rpc
        def echo(self, text: str, times: int = 1, *, upper: bool | None = None) -> list[str]:
            """Say it again.

            As often as asked."""
            return [text] * times

        def not_an_entrypoint(self) -> None: ...

    document = build_asyncapi((Echo,))
    operation = document["operations"]["echo.echo"]
    assert set(document["operations"]) - {"echo.echo"} == set(_event_operations(document))
    assert operation["summary"] == "Say it again." and "As often as asked." in operation["description"]
    request = resolve(document, operation["messages"][0]["$ref"])
    arguments = request["payload"]["properties"]
    assert arguments["kwargs"]["properties"] == {
        "text": {"type": "string"},
        "times": {"type": "integer", "default": 1},
        "upper": {"type": ["boolean", "null"], "default": None},
    }
    assert arguments["args"]["items"] == [{"type": "string"}, {"type": "integer", "default": 1}]
    assert arguments["args"]["maxItems"] == 2
    assert "required: `text`." in request["payload"]["description"]
    reply = resolve(document, operation["reply"]["messages"][0]["$ref"])
    assert reply["payload"]["properties"]["result"]["type"] == ["array", "null"]


def _event_operations(document: dict) -> list[str]:
    return [key for key, operation in document["operations"].items() if "reply" not in operation]


def published_events() -> set[tuple[str, str]]:
    """``(source, event type)`` of every publish in the source: ``outbox.add(session, "<type>", ...)``
    and ``...(event_type="<type>", ...)`` in ``services/<source>.py`` and ``services/_<source>/``, and
    ``self.dispatch("<type>", ...)`` in the gateway."""
    modules = [(path, path.stem) for path in (ROOT / "services").glob("*.py")]
    modules += [(path, path.parent.name[1:]) for path in (ROOT / "services").glob("_*/*.py")]
    modules += [(path, "gateway") for path in (ROOT / "gateway").rglob("*.py")]
    found = set()
    for path, source in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                found.update((source, event_type) for event_type in _event_types(node))
    return found


def _event_types(call: ast.Call) -> list[str]:
    named = [k.value.value for k in call.keywords if k.arg == "event_type" and isinstance(k.value, ast.Constant)]
    function, args = call.func, call.args
    if not isinstance(function, ast.Attribute):
        return named
    outbox = function.attr == "add" and isinstance(function.value, ast.Attribute) and function.value.attr == "outbox"
    if outbox and len(args) > 1 and isinstance(args[1], ast.Constant):
        return [*named, args[1].value]
    if function.attr == "dispatch" and args and isinstance(args[0], ast.Constant):
        return [*named, args[0].value]
    return named


def test_the_source_scan_finds_publishes():
    found = published_events()
    assert {("students", "student_created"), ("status", "student_status_changed")} <= found
    assert ("gateway", "status_change_requested") in found


def test_every_published_event_is_listed_with_its_payload():
    assert published_events() == set(schemas.EVENTS)


@pytest.mark.parametrize(("source", "event_type"), list(schemas.EVENTS))
def test_every_event_has_its_channel_message_and_publisher(document, source, event_type):
    channel = document["channels"][f"event.{source}.{event_type}"]
    assert channel["address"] == event_type
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": f"{source}.events",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
    }
    publisher = document["operations"][f"{source}.publish_{event_type}"]
    assert publisher["action"] == "send" and publisher["x-service"] == source
    message = document["components"]["messages"][f"{source}.{event_type}"]
    assert message["name"] == event_type
    assert message["headers"] == {"$ref": "#/components/schemas/NamekoContext"}


@pytest.mark.parametrize("subscription", SUBSCRIPTIONS, ids=lambda s: s.queue_name)
def test_every_subscription_is_a_durable_queue_and_a_handler(document, subscription):
    queue = document["channels"][f"queue.{subscription.queue_name}"]
    assert queue["bindings"]["amqp"]["queue"] == {
        "name": subscription.queue_name,
        "durable": True,
        "exclusive": False,
        "autoDelete": False,
    }
    assert queue["x-binding"] == {"exchange": f"{subscription.source}.events", "routingKey": subscription.event_type}
    handler = document["operations"][f"{subscription.service}.{subscription.handler}"]
    assert handler["action"] == "receive"
    assert handler["channel"] == {"$ref": f"#/channels/queue.{subscription.queue_name}"}
    message = resolve(document, handler["messages"][0]["$ref"], follow=False)
    assert message == {"$ref": f"#/components/messages/{subscription.source}.{subscription.event_type}"}


@pytest.mark.parametrize("follow", FOLLOWS, ids=lambda s: s.queue_name)
def test_every_followed_event_is_a_queue_per_process(document, follow):
    channel = f"queue.{follow.queue_name}.per-process"
    queue = document["channels"][channel]
    assert queue["address"] == f"{follow.queue_name}-{{process}}" and "process" in queue["parameters"]
    assert queue["bindings"]["amqp"]["queue"]["exclusive"] is True
    assert queue["bindings"]["amqp"]["queue"]["autoDelete"] is True
    assert queue["x-binding"] == {"exchange": f"{follow.source}.events", "routingKey": follow.event_type}
    handler = document["operations"][f"{follow.service}.{follow.handler}"]
    assert handler["action"] == "receive" and handler["channel"] == {"$ref": f"#/channels/{channel}"}


def test_a_subscription_to_an_unlisted_event_is_refused(monkeypatch):
    extra = Subscription("students", "student_graduated", "status", "handle_student_graduated")
    monkeypatch.setattr(asyncapi, "SUBSCRIPTIONS", (*SUBSCRIPTIONS, extra))
    with pytest.raises(ValueError, match="student_graduated"):
        build_asyncapi.__wrapped__(SERVICES)


@pytest.mark.parametrize(("event", "schema"), schemas.EVENTS.items(), ids=lambda v: getattr(v, "__name__", v))
def test_payloads_are_the_marshmallow_schemas(document, event, schema: type[Schema]):
    message = document["components"]["messages"][".".join(event)]
    payload = resolve(document, message["payload"]["$ref"])
    fields = schema().fields
    assert set(payload["properties"]) == set(fields)
    assert set(payload.get("required", ())) == {name for name, field in fields.items() if field.required}


def test_a_batch_of_status_changes_refers_to_the_change(document):
    payload = document["components"]["schemas"]["StudentStatusChanges"]
    assert payload["properties"]["changes"]["items"] == {"$ref": "#/components/schemas/StudentStatusChanged"}
    change = document["components"]["schemas"]["StudentStatusChanged"]
    assert change["properties"]["to_status"]["enum"] == ["enrolled", "active", "suspended", "completed", "withdrawn"]
    assert "W3C" in change["properties"]["traceparent"]["description"]


def test_messages_carry_the_context_headers_and_correlation(document):
    headers = document["components"]["schemas"]["NamekoContext"]["properties"]
    assert {"nameko.correlation_id", "nameko.call_id_stack", "nameko.traceparent"} <= set(headers)
    correlation = document["components"]["correlationIds"]
    assert correlation["rpc"]["location"] == "$message.header#/correlation_id"
    assert correlation["request"]["location"] == "$message.header#/nameko.correlation_id"
    error = document["components"]["schemas"]["RemoteError"]
    assert set(error["required"]) == {"exc_type", "exc_path", "exc_args", "value"}
    assert "services.exceptions.StudentNotFound" in error["properties"]["exc_path"]["examples"]


def test_an_rpc_request_is_args_and_kwargs(document):
    request = document["components"]["messages"]["status.get_job.request"]
    assert request["correlationId"] == {"$ref": "#/components/correlationIds/rpc"}
    payload = request["payload"]
    assert payload["required"] == ["args", "kwargs"] and payload["additionalProperties"] is False
    assert payload["properties"]["kwargs"]["properties"] == {
        "job_id": {"type": "string"},
        "errors": {"type": "integer", "default": 100},
    }
    ping = document["components"]["messages"]["students.ping.request"]["payload"]["properties"]
    assert ping["args"] == {"type": "array", "maxItems": 0}


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (int, {"type": "integer"}),
        (str | None, {"type": ["string", "null"]}),
        (list[dict], {"type": "array", "items": {"type": "object"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (typing.Optional[list[int]], {"type": ["array", "null"], "items": {"type": "integer"}}),  # noqa: UP045
        (typing.Any, {}),
        (None, {}),
        (type(None), {"type": "null"}),
        (int | list[int], {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]}),
        (int | str | None, {"type": ["integer", "string", "null"]}),
        (int | typing.Any, {}),
    ],
)
def test_type_schema(hint, schema):
    assert type_schema(hint) == schema


@pytest.mark.parametrize(
    ("schema", "or_null"),
    [
        ({"type": "string"}, {"type": ["string", "null"]}),
        ({"type": "null"}, {"type": "null"}),
        ({"type": ["integer", "null"]}, {"type": ["integer", "null"]}),
        ({"type": "array", "items": {}}, {"type": ["array", "null"], "items": {}}),
        ({"$ref": "#/x"}, {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}),
        ({}, {}),
    ],
)
def test_nullable(schema, or_null):
    assert nullable(schema) == or_null
