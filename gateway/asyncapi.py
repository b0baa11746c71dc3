"""The messaging API as an AsyncAPI 3.0 document, generated from the code.

- RPC methods: every ``@rpc`` entrypoint of the service classes handed to :func:`build_asyncapi`
  (nameko marks an entrypoint on its method: ``nameko_entrypoints``), with its arguments and
  return type from the method's signature and its description from the docstring; a new method
  appears here by itself.
- Events: each ``(source, event type)`` of :data:`services.schemas.EVENTS`, its payload converted
  from the marshmallow schema with apispec's ``MarshmallowPlugin`` (as the OpenAPI document's).
- Subscriber queues: :data:`services.infra.topology.SUBSCRIPTIONS`, the queues nameko declares.

On the wire (nameko 2.x over AMQP 0-9-1): a request is published to the topic exchange
``nameko-rpc`` with the routing key ``<service>.<method>``, the AMQP properties ``reply_to``
and ``correlation_id``, and the body ``{"args": [...], "kwargs": {...}}``; the service consumes
it from its queue ``rpc-<service>`` and publishes ``{"result": ..., "error": ...}`` to
``nameko-rpc`` with ``reply_to`` as routing key and the same ``correlation_id``. An event is
published to the topic exchange ``<source>.events`` with its type as routing key. Every message
carries nameko's context data as headers (``nameko.correlation_id``, ...).

Each queue is a channel of its own (``queue.<name>``, AMQP ``is: queue``) with the exchange and
binding key it is bound with in ``x-binding``; each routing key is a channel (``rpc.<service>.<method>``,
``event.<source>.<event type>``). The HTML page (:func:`gateway.pages.messaging_page`) is made from this
document alone.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from kombu import Exchange, Queue
from marshmallow import Schema, fields
from nameko import exceptions as nameko_exceptions
from nameko.constants import CALL_ID_STACK_CONTEXT_KEY, HEADER_PREFIX
from nameko.rpc import RPC_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TTL, Rpc, get_rpc_exchange
from nameko.standalone.events import get_event_exchange

from services import schemas
from services.certificates import CertificatesService
from services.fields import TraceParent
from services.infra import correlation, tracing
from services.infra.topology import FOLLOWS, SUBSCRIPTIONS, Subscription, rpc_queue, subscriber_queues
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING = "0.3.0"
JSON = "application/json"
# the Nameko services whose RPC methods the document lists (the gateway has none; it publishes
# status_change_requested, which services.schemas.EVENTS lists with the services' events)
SERVICES: tuple[type, ...] = (StudentsService, StatusService, CertificatesService, NotificationsService)
RPC_EXCHANGE = get_rpc_exchange({})  # nameko's default; config.yaml does not rename it
CONTEXT = "NamekoContext"
REMOTE_ERROR = "RemoteError"
REPLIES = "rpc.replies"
DESCRIPTION = """Nameko services over RabbitMQ: RPC methods (request and reply) and events.

**RPC.** A request goes to the topic exchange `nameko-rpc` with the routing key `<service>.<method>`,
`content_type` `application/json`, the AMQP properties `reply_to` (the caller's reply queue's
routing key) and `correlation_id`, and the body `{"args": [...], "kwargs": {...}}`. The service
consumes it from its durable queue `rpc-<service>` and publishes `{"result": ..., "error": ...}` to
`nameko-rpc` with `reply_to` as routing key and the same `correlation_id`. A deliberate error is a
`services.exceptions.ServiceError` (`exc_path` names it; callers that import the module catch it typed).
A request that is not JSON, not `{"args": [...], "kwargs": {...}}` or over `MAX_MESSAGE_BYTES` is
answered `MalformedRequest` at once.

**Events.** An event goes to the topic exchange `<source>.events` with its type as routing key,
persistent. Every subscriber has a durable queue of its own, declared by the publishers too, so an
event published while a subscriber is down waits for it. A handler that fails is retried through
delay queues and then parked in `<service>.dead-letters`.

**Headers.** Every message carries nameko's context data as headers (`nameko.correlation_id`,
`nameko.call_id_stack`, `nameko.traceparent`); the correlation id follows a request from HTTP through
every RPC call, event, certificate and mail."""
JSON_VALUES = (str, int, float, bool, type(None))  # defaults the document can show
_JSON_TYPES = {int: "integer", str: "string", bool: "boolean", float: "number", dict: "object", list: "array"}


class RpcMethod(NamedTuple):
    service: str
    name: str
    function: Callable

    @property
    def key(self) -> str:
        return f"{self.service}.{self.name}"


def rpc_methods(service: type) -> list[RpcMethod]:
    """Every ``@rpc`` entrypoint of ``service`` (its mixins' too), by name."""
    found = []
    for name in dir(service):
        function = getattr(service, name)
        if any(isinstance(entrypoint, Rpc) for entrypoint in getattr(function, "nameko_entrypoints", ())):
            found.append(RpcMethod(service.name, name, function))
    return found


# --- Python signatures as JSON Schema ------------------------------------------------------


def type_schema(hint: Any) -> dict:
    """A type hint as JSON Schema: builtins, ``list[...]``, ``dict[...]``, unions; {} for anything else."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return {"type": "null"}
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        schema = type_schema(others[0]) if len(others) == 1 else _any_of([type_schema(arg) for arg in others])
        return nullable(schema) if len(others) < len(args) else schema
    kind = _JSON_TYPES.get(origin or hint)
    if kind is None:
        return {}
    schema: dict[str, Any] = {"type": kind}
    if kind == "array" and args:
        schema["items"] = type_schema(args[0])
    elif kind == "object" and len(args) == 2:
        schema["additionalProperties"] = type_schema(args[1])
    return schema


def _any_of(options: list[dict]) -> dict:
    if {} in options:
        return {}
    if all(set(option) == {"type"} for option in options):
        return {"type": [option["type"] for option in options]}
    return {"anyOf": options}


def nullable(schema: dict) -> dict:
    """``schema``, or null."""
    if not schema:  # anything, null included
        return schema
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        kinds = list(dict.fromkeys([*kinds, "null"]))
        return {**schema, "type": kinds if len(kinds) > 1 else kinds[0]}
    return {"anyOf": [schema, {"type": "null"}]}


def _hints(function: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):  # a hint that cannot be resolved says nothing
        return {}


def request_payload(method: RpcMethod) -> dict:
    """``{"args": [...], "kwargs": {...}}`` for ``method``'s parameters."""
    hints = _hints(method.function)
    parameters = [p for p in inspect.signature(method.function).parameters.values() if p.name != "self"]
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    properties = {}
    for parameter in named:
        schema = type_schema(hints.get(parameter.name))
        if parameter.default is not parameter.empty and isinstance(parameter.default, JSON_VALUES):
            schema["default"] = parameter.default
        properties[parameter.name] = schema
    required = [p.name for p in named if p.default is p.empty]
    positional = [p for p in named if p.kind != p.KEYWORD_ONLY]
    args: dict[str, Any] = {"type": "array", "maxItems": len(positional)}
    if positional:
        args["items"] = [properties[p.name] for p in positional]
        args["description"] = "In this order: " + ", ".join(p.name for p in positional) + "."
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        del args["maxItems"]
    kwargs = {
        "type": "object",
        "properties": properties,
        "additionalProperties": any(p.kind == p.VAR_KEYWORD for p in parameters),
    }
    return {
        "type": "object",
        "required": ["args", "kwargs"],
        "additionalProperties": False,
        "properties": {"args": args, "kwargs": kwargs},
        "description": "Each argument goes by position in `args` or by name in `kwargs`; "
        + ("required: " + ", ".join(f"`{name}`" for name in required) + "." if required else "none is required."),
    }


def reply_payload(method: RpcMethod) -> dict:
    result = nullable(type_schema(_hints(method.function).get("return", typing.Any)))
    result["description"] = "What the method returned; null when `error` is set."
    return {
        "type": "object",
        "required": ["result", "error"],
        "additionalProperties": False,
        "properties": {
            "result": result,
            "error": {"oneOf": [{"type": "null"}, {"$ref": f"#/components/schemas/{REMOTE_ERROR}"}]},
        },
    }


# --- the shared parts -----------------------------------------------------------------------


def context_headers() -> dict:
    """nameko's context data, one AMQP header per key (``nameko.<key>``)."""
    traceparent, tracestate = tracing.HEADERS
    return {
        "type": "object",
        "description": "nameko sends a worker's context data as headers `nameko.<key>`: every RPC request and "
        "event carries the correlation id of the work that sent it, and the worker that handles it runs under it.",
        "properties": {
            correlation.HEADER: {
                "type": "string",
                "pattern": f"^{correlation.PATTERN}$",
                "description": "The correlation id of the HTTP request (its X-Request-Id) or call that caused "
                "this message; it follows the request through every hop.",
            },
            f"{HEADER_PREFIX}.{CALL_ID_STACK_CONTEXT_KEY}": {
                "type": "array",
                "items": {"type": "string"},
                "description": "`<service>.<entrypoint>.<uuid>` of each worker that led here, oldest first "
                "(messages sent by a worker; the outbox relays send only the correlation id).",
            },
            traceparent: {
                "type": "string",
                "pattern": f"^{TraceParent.PATTERN.pattern}$",
                "description": "W3C trace context of the sending span, while traces are on.",
            },
            tracestate: {"type": "string", "description": "W3C tracestate, with traceparent."},
        },
    }


def remote_error() -> dict:
    """nameko's serialised exception, as a reply's ``error``."""
    return {
        "type": "object",
        "description": "The exception the method raised, as nameko serialises it. A caller that imports "
        "`services.exceptions` gets the same class back (`exc_path`); a `ServiceError` carries "
        "`[message, details as a JSON string]` in `exc_args`.",
        "required": ["exc_type", "exc_path", "exc_args", "value"],
        "properties": {
            "exc_type": {"type": "string", "description": "The class name.", "examples": ["StudentNotFound"]},
            "exc_path": {
                "type": "string",
                "description": "The class's import path: its name on the wire.",
                "examples": sorted(nameko_exceptions.registry),
            },
            "exc_args": {"type": "array", "description": "The exception's arguments."},
            "value": {"type": "string", "description": "`str(exception)`: its message."},
        },
    }


def _trace_parent(self: Any, field: fields.Field, **_: Any) -> dict:
    if isinstance(field, TraceParent):
        return {"description": "W3C trace context of this item's span, while traces are on; anything else is ignored."}
    return {}


def _schema_name(schema: type[Schema]) -> str:
    return schema.__name__.removesuffix("Schema")


def _exchange(exchange: Exchange) -> dict:
    return {
        "name": exchange.name,
        "type": exchange.type,
        "durable": bool(exchange.durable),
        "autoDelete": bool(exchange.auto_delete),
    }


def _queue_channel(queue: Queue, messages: dict, description: str) -> dict:
    """A queue as its declaration says it, bound (``x-binding``) to its exchange with its key."""
    return {
        "address": queue.name,
        "title": f"queue {queue.name}",
        "description": description,
        "messages": messages,
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": queue.name,
                    "durable": bool(queue.durable),
                    "exclusive": bool(queue.exclusive),
                    "autoDelete": bool(queue.auto_delete),
                },
                "bindingVersion": AMQP_BINDING,
            }
        },
        "x-binding": {"exchange": queue.exchange.name, "routingKey": queue.routing_key},
    }


def _routing_key_channel(address: str | None, exchange: Exchange, messages: dict, title: str, description: str) -> dict:
    return {
        "address": address,
        "title": title,
        "description": description,
        "messages": messages,
        "bindings": {"amqp": {"is": "routingKey", "exchange": _exchange(exchange), "bindingVersion": AMQP_BINDING}},
    }


def _summary(doc: str | None) -> str | None:
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else None


def _described(target: dict, doc: str | None) -> dict:
    """``summary``: the docstring's first paragraph; ``description``: all of it, when there is more."""
    if doc:
        target["summary"] = _summary(doc)
        if "\n\n" in doc.strip():
            target["description"] = inspect.cleandoc(doc)
    return target


# --- the document ---------------------------------------------------------------------------


@lru_cache(maxsize=4)
def build_asyncapi(services: tuple[type, ...] = SERVICES) -> dict:
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "mensageria messaging",
            "version": "1.0.0",
            "description": DESCRIPTION,
        },
        "defaultContentType": JSON,
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "The RabbitMQ at `AMQP_URI` (default `amqp://localhost:5672/`, vhost `/`).",
            }
        },
        "channels": {},
        "operations": {},
        "components": {
            "schemas": {CONTEXT: context_headers(), REMOTE_ERROR: remote_error()},
            "messages": {},
            "correlationIds": {
                "rpc": {
                    "location": "$message.header#/correlation_id",
                    "description": "The AMQP property `correlation_id` of a request (a UUID its caller makes), "
                    "which its reply carries back.",
                },
                "request": {
                    "location": f"$message.header#/{correlation.HEADER}",
                    "description": "The correlation id of the request that caused the message.",
                },
            },
        },
    }
    document["channels"][REPLIES] = _replies_channel()
    for service in services:
        _add_rpc(document, service)
    _add_events(document)
    return document


def _add_rpc(document: dict, service: type) -> None:
    channels, operations, messages = document["channels"], document["operations"], document["components"]["messages"]
    queue = RPC_QUEUE_TEMPLATE.format(service.name)
    methods = rpc_methods(service)
    for method in methods:
        request, reply = f"{method.key}.request", f"{method.key}.reply"
        doc = inspect.getdoc(method.function)
        messages[request] = _described(
            {
                "name": method.key,
                "title": f"{method.key} request",
                "contentType": JSON,
                "headers": {"$ref": f"#/components/schemas/{CONTEXT}"},
                "payload": request_payload(method),
                "correlationId": {"$ref": "#/components/correlationIds/rpc"},
            },
            doc,
        )
        messages[reply] = {
            "name": f"{method.key}.reply",
            "title": f"{method.key} reply",
            "contentType": JSON,
            "payload": reply_payload(method),
            "correlationId": {"$ref": "#/components/correlationIds/rpc"},
        }
        channel = f"rpc.{method.key}"
        channels[channel] = _routing_key_channel(
            method.key,
            RPC_EXCHANGE,
            {"request": {"$ref": f"#/components/messages/{request}"}},
            f"RPC {method.key}",
            f"Requests to `{method.key}`, consumed by {service.name} from the queue `{queue}`.",
        )
        channels[REPLIES]["messages"][reply] = {"$ref": f"#/components/messages/{reply}"}
        operations[method.key] = _described(
            {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": method.key,
                "messages": [{"$ref": f"#/channels/{channel}/messages/request"}],
                "reply": {
                    "channel": {"$ref": f"#/channels/{REPLIES}"},
                    "address": {
                        "location": "$message.header#/reply_to",
                        "description": "The AMQP property `reply_to` of the request.",
                    },
                    "messages": [{"$ref": f"#/channels/{REPLIES}/messages/{reply}"}],
                },
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
                "tags": [{"name": service.name}, {"name": "rpc"}],
                "x-service": service.name,
            },
            doc,
        )
    channels[f"queue.{queue}"] = _queue_channel(
        rpc_queue(service.name, {}),  # as the services declare it
        {m.name: {"$ref": f"#/components/messages/{m.key}.request"} for m in methods},
        f"The {service.name} service's RPC requests; its instances consume it as competing consumers.",
    )


def _replies_channel() -> dict:
    queue = RPC_REPLY_QUEUE_TEMPLATE.format("<caller>", "<uuid>")
    return _routing_key_channel(
        None,
        RPC_EXCHANGE,
        {},
        "RPC replies",
        f"Each caller's own reply queue `{queue}` (expires {RPC_REPLY_QUEUE_TTL // 60000} minutes after its "
        "last consumer leaves), bound with a UUID routing key that its requests carry as `reply_to`.",
    )


def _add_events(document: dict) -> None:
    channels, operations = document["channels"], document["operations"]
    components = document["components"]
    plugin = MarshmallowPlugin()
    converter = APISpec(title="-", version="-", openapi_version="3.1.0", plugins=[plugin])
    plugin.converter.add_attribute_function(_trace_parent)
    for schema in schemas.EVENTS.values():
        converter.components.schema(_schema_name(schema), schema=schema)
    components["schemas"].update(converter.to_dict()["components"]["schemas"])
    for (source, event_type), schema in schemas.EVENTS.items():
        key, exchange = f"{source}.{event_type}", get_event_exchange(source, {})
        components["messages"][key] = _described(
            {
                "name": event_type,
                "title": f"{key} event",
                "contentType": JSON,
                "headers": {"$ref": f"#/components/schemas/{CONTEXT}"},
                "payload": {"$ref": f"#/components/schemas/{_schema_name(schema)}"},
                "correlationId": {"$ref": "#/components/correlationIds/request"},
            },
            inspect.getdoc(schema),
        )
        channel = f"event.{key}"
        channels[channel] = _routing_key_channel(
            event_type,
            exchange,
            {event_type: {"$ref": f"#/components/messages/{key}"}},
            f"event {key}",
            f"`{event_type}` events of {source}, on the exchange `{exchange.name}`.",
        )
        operations[f"{source}.publish_{event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "title": f"{source} publishes {event_type}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{event_type}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}},
            "tags": [{"name": source}, {"name": "events"}],
            "x-service": source,
        }
    for subscription in SUBSCRIPTIONS:
        if (subscription.source, subscription.event_type) not in schemas.EVENTS:
            raise ValueError(f"{subscription} handles an event services.schemas.EVENTS does not list")
        _add_subscription(document, subscription)
    for follow in FOLLOWS:
        if (follow.source, follow.event_type) not in schemas.EVENTS:
            raise ValueError(f"{follow} follows an event services.schemas.EVENTS does not list")
        _add_follow(document, follow)


def _add_follow(document: dict, sub: Subscription) -> None:
    key = f"{sub.source}.{sub.event_type}"
    channel = f"queue.{sub.queue_name}.per-process"
    exchange = get_event_exchange(sub.source, {})
    queue = Queue(f"{sub.queue_name}-{{process}}", exchange=exchange, routing_key=sub.event_type, durable=True)
    queue.exclusive = queue.auto_delete = True  # nameko's BROADCAST handler without reliable delivery
    document["channels"][channel] = {
        **_queue_channel(
            queue,
            {sub.event_type: {"$ref": f"#/components/messages/{key}"}},
            f"The queue of one {sub.service} process for `{key}` events: each process declares its own "
            "(exclusive, deleted with its connection), so every process hears every event from when it is "
            "connected; events published while it was not are not kept for it.",
        ),
        "parameters": {"process": {"description": "An id each process makes as it starts (its broadcast identifier)."}},
    }
    document["operations"][f"{sub.service}.{sub.handler}"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": f"{sub.service}.{sub.handler}",
        "summary": f"every {sub.service} process hears {key}.",
        "description": "Acked once handled; a malformed event is logged and changes nothing. The gateway keeps "
        "its read copy of students with these; while its queues are gone (its connection lost) it reads "
        "through to the students service and starts its copy afresh when they are back.",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{sub.event_type}"}],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
        "tags": [{"name": sub.service}, {"name": "events"}],
        "x-service": sub.service,
    }


def _add_subscription(document: dict, sub: Subscription) -> None:
    key = f"{sub.source}.{sub.event_type}"
    channel = f"queue.{sub.queue_name}"
    (queue,) = (q for q in subscriber_queues(sub.source, {}) if q.name == sub.queue_name)
    document["channels"][channel] = _queue_channel(
        queue,
        {sub.event_type: {"$ref": f"#/components/messages/{key}"}},
        f"{sub.service}'s queue of `{key}` events, declared by every publisher of {sub.source} events "
        f"and by {sub.service}, so events wait in it while {sub.service} is down.",
    )
    document["operations"][f"{sub.service}.{sub.handler}"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": f"{sub.service}.{sub.handler}",
        "summary": f"{sub.service} handles {key}.",
        "description": "Acked once the handler has committed; a failure is retried through delay queues "
        f"(`{sub.queue_name}.retry.<ms>ms`), then parked in `{sub.service}.dead-letters`.",
        "messages": [{"$ref": f"#/channels/{channel}/messages/{sub.event_type}"}],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
        "tags": [{"name": sub.service}, {"name": "events"}],
        "x-service": sub.service,
    }
