"""The documentation pages, rendered on the server with Jinja2 (autoescaped; descriptions are
CommonMark without raw HTML):

- :func:`redoc_page`: the OpenAPI document, rendered in the browser by the vendored Redoc;
- :func:`messaging_page`: the AsyncAPI document (:mod:`gateway.asyncapi`) as one readable page,
  without JavaScript: per event its exchange, routing key, publisher, subscribers and their
  queues, and its payload as field tables; per service its RPC methods with their routing keys,
  arguments and results. Everything it shows is read from the document, so the page and
  ``/asyncapi.json`` cannot disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"
_markdown = MarkdownIt("commonmark", {"html": False})  # raw HTML in a description is shown as text
_environment = Environment(  # the templates ship with the code: read once, not stat()ed at every page
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, auto_reload=False
)
_environment.filters["markdown"] = lambda text: Markup(_markdown.render(text or ""))


class Part(NamedTuple):
    """A piece of a type's name; ``href`` links it to a schema's table."""

    text: str
    href: str | None = None


class Row(NamedTuple):
    name: str
    type: list[Part]
    required: bool
    notes: list[str]  # constraints, as text
    pattern: str | None
    description: str


class Table(NamedTuple):
    name: str
    anchor: str
    description: str
    rows: list[Row]
    open: bool  # whether fields beyond those listed are allowed


class Queue(NamedTuple):
    name: str
    binding_key: str
    consumers: list[str]  # operation ids


class Event(NamedTuple):
    key: str
    anchor: str
    summary: str
    description: str
    exchange: dict
    routing_key: str
    publishers: list[str]
    queues: list[Queue]
    payload: Table


class Method(NamedTuple):
    key: str
    anchor: str
    summary: str
    description: str
    arguments: list[Row]
    result: list[Part]


class Service(NamedTuple):
    name: str
    exchange: dict
    queues: list[Queue]
    methods: list[Method]


def redoc_page(spec_url: str, script_url: str, messaging_url: str) -> str:
    return _environment.get_template("redoc.html").render(
        spec_url=spec_url, script_url=script_url, messaging_url=messaging_url
    )


def messaging_page(document: dict, links: dict[str, str]) -> str:
    """``links``: the (relative) URLs of ``asyncapi``, ``openapi_docs`` and ``stylesheet``."""
    schemas = document["components"]["schemas"]
    events = _events(document)
    payloads = {event.payload.name for event in events}
    return _environment.get_template("messaging.html").render(
        info=document["info"],
        asyncapi_version=document["asyncapi"],
        events=events,
        services=_services(document),
        schemas=[_table(name, schemas[name]) for name in schemas if name not in payloads],
        links=links,
    )


# --- reading the document -------------------------------------------------------------------


def resolve(document: dict, ref: str) -> Any:
    """What a local ``$ref`` points to, following a reference that points to another."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(document, node["$ref"])
    return node


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    words = [re.escape(word) for word in binding_key.split(".")]
    pattern = r"\.".join("[^.]+" if w == r"\*" else ".*" if w == r"\#" else w for w in words)
    return re.fullmatch(pattern, routing_key) is not None


def _exchange(channel: dict) -> dict:
    return channel["bindings"]["amqp"].get("exchange", {})


def _queues(document: dict, channel: dict) -> list[Queue]:
    """The queue channels bound to a routing-key channel's exchange with a key that matches its address."""
    exchange, found = _exchange(channel)["name"], []
    for channel_id, queue in document["channels"].items():
        binding = queue.get("x-binding")
        if binding and binding["exchange"] == exchange and topic_matches(binding["routingKey"], channel["address"]):
            consumers = _operations_on(document, channel_id, "receive")
            found.append(Queue(queue["address"], binding["routingKey"], consumers))
    return found


def _operations_on(document: dict, channel_id: str, action: str) -> list[str]:
    ref = f"#/channels/{channel_id}"
    return [
        operation_id
        for operation_id, operation in document["operations"].items()
        if operation["channel"]["$ref"] == ref and operation["action"] == action
    ]


def _events(document: dict) -> list[Event]:
    events = []
    for channel_id, channel in document["channels"].items():
        publishers = _operations_on(document, channel_id, "send")
        if not publishers:
            continue
        (message_ref,) = channel["messages"].values()
        message = resolve(document, message_ref["$ref"])
        key = message_ref["$ref"].rsplit("/", 1)[1]
        payload_name = message["payload"]["$ref"].rsplit("/", 1)[1]
        events.append(
            Event(
                key=key,
                anchor=f"event-{key}",
                summary=message.get("summary", ""),
                description=message.get("description", ""),
                exchange=_exchange(channel),
                routing_key=channel["address"],
                publishers=[document["operations"][op]["x-service"] for op in publishers],
                queues=_queues(document, channel),
                payload=_table(payload_name, resolve(document, message["payload"]["$ref"])),
            )
        )
    return events


def _services(document: dict) -> list[Service]:
    services: dict[str, Service] = {}
    for operation_id, operation in document["operations"].items():
        if "reply" not in operation:
            continue
        channel = resolve(document, operation["channel"]["$ref"])
        request = resolve(document, operation["messages"][0]["$ref"])
        reply = resolve(document, operation["reply"]["messages"][0]["$ref"])
        name = operation["x-service"]
        service = services.setdefault(name, Service(name, _exchange(channel), _queues(document, channel), []))
        service.methods.append(
            Method(
                key=operation_id,
                anchor=f"rpc-{operation_id}",
                summary=operation.get("summary", ""),
                description=operation.get("description", ""),
                arguments=_arguments(request["payload"]),
                result=type_parts(_not_null(reply["payload"]["properties"]["result"])),
            )
        )
    return list(services.values())


def _not_null(result: dict) -> dict:
    """A reply's ``result`` without the null every one may be (when ``error`` is set): what the method returns."""
    kinds = result.get("type")
    if isinstance(kinds, list) and len(kinds) > 1 and "null" in kinds:
        rest = [kind for kind in kinds if kind != "null"]
        return {**result, "type": rest[0] if len(rest) == 1 else rest}
    return result


def _arguments(payload: dict) -> list[Row]:
    """An RPC request's arguments: its ``kwargs`` properties (required: those without a default)."""
    properties = payload["properties"]["kwargs"]["properties"]
    return [_row(name, schema, "default" not in schema) for name, schema in properties.items()]


# --- JSON Schema as tables ------------------------------------------------------------------


def _table(name: str, schema: dict) -> Table:
    required = set(schema.get("required", ()))
    rows = [_row(field, prop, field in required) for field, prop in schema.get("properties", {}).items()]
    others_allowed = schema.get("additionalProperties") is not False
    return Table(name, f"schema-{name}", schema.get("description", ""), rows, others_allowed)


def _row(name: str, schema: dict, required: bool) -> Row:
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(json.dumps(value) for value in schema["enum"]))
    if isinstance(schema.get("items"), dict) and "enum" in schema["items"]:
        notes.append("each one of " + ", ".join(json.dumps(value) for value in schema["items"]["enum"]))
    for low, high, unit in (("minLength", "maxLength", "characters"), ("minItems", "maxItems", "items")):
        if low in schema or high in schema:
            notes.append(_bounds(schema.get(low), schema.get(high), unit))
    if "minimum" in schema or "maximum" in schema:
        notes.append(_bounds(schema.get("minimum"), schema.get("maximum"), "").strip())
    if "default" in schema:
        notes.append(f"default {json.dumps(schema['default'])}")
    if schema.get("readOnly"):
        notes.append("read only")
    return Row(name, type_parts(schema), required, notes, schema.get("pattern"), schema.get("description", ""))


def _bounds(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low} to {high} {unit}"
    return f"at least {low} {unit}" if high is None else f"at most {high} {unit}"


def type_parts(schema: dict) -> list[Part]:
    """A schema's type in words: ``integer``, ``string (date-time) or null``, ``array of`` a link, ..."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return [Part(name, f"#schema-{name}")]
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            parts: list[Part] = []
            for option in schema[keyword]:
                parts += [Part(" or ")] if parts else []
                parts += type_parts(option)
            return parts
    kinds = schema.get("type")
    if kinds is None:
        return [Part("any")]
    parts = []
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        parts += [Part(" or ")] if parts else []
        if kind == "array" and isinstance(schema.get("items"), dict):
            parts += [Part("array of "), *type_parts(schema["items"])]
        elif kind == "string" and "format" in schema:
            parts.append(Part(f"string ({schema['format']})"))
        else:
            parts.append(Part(kind))
    return parts
