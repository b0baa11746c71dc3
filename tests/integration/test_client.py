"""The pika client (``clients/``) against the real services on a real broker.

The client is for programs that do not run eventlet, while these tests run under
eventlet's monkey-patching (the services run in this process). So the client
runs where its users run it: in a plain child Python process, started as
``python -m tests.integration.test_client <scenario> <json params>``. Each
scenario below is such a child: it drives the client and prints one JSON line of
what it saw; the test asserts on that. The child also checks that importing the
client loaded neither nameko nor eventlet.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60.0

# --- the parent side: pytest -------------------------------------------------


@pytest.fixture
def db_uris(request, tmp_path) -> dict[str, str]:
    """SQLite only: these tests are about the wire, which no database changes."""
    from tests.conftest import make_db_uris

    return make_db_uris("sqlite", tmp_path, request)


def run_client(scenario: str, **params: Any) -> dict:
    """Run ``scenario`` in a child process without eventlet; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_client", scenario, json.dumps(params)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, f"{scenario} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.splitlines()[-1])


def test_rpc_round_trip_and_typed_errors(config, services, unique):
    seen = run_client("round_trip_and_errors", url=config["AMQP_URI"], unique=unique)

    assert seen["forbidden_modules"] == []
    created = seen["created"]
    assert created["email"] == f"ada.{unique}@school.example" and created["status"] == "enrolled"
    assert seen["got"] == created and seen["ping"] == {"service": "status", "ok": True}
    requested = seen["requested"]  # the reply to the request itself: recorded, not yet applied
    assert (requested["student_id"], requested["status"], requested["state"]) == (created["id"], "active", "pending")
    assert requested["idempotency_key"] == unique
    assert seen["settled"] | {"updated_at": None} == requested | {
        "state": "applied",
        "from_status": "enrolled",
        "updated_at": None,
    }

    errors = seen["errors"]
    assert errors["missing_student"] | {"elapsed": None} == {
        "class": "StudentNotFound",
        "bases": ["NotFound", "ServiceError", "RemoteError", "ClientError"],
        "code": "STUDENT_NOT_FOUND",
        "message": "Student 10000000 not found.",
        "details": {"student_id": 10**7},
        "exc_path": "services.exceptions.StudentNotFound",
        "elapsed": None,
    }
    invalid = errors["invalid_student"]
    assert (invalid["class"], invalid["code"]) == ("ValidationFailed", "VALIDATION_ERROR")
    assert set(invalid["details"]) == {"name", "email", "course"}
    assert all(isinstance(messages, list) and messages for messages in invalid["details"].values())
    expected = {
        "duplicate_email": ("EmailAlreadyExists", "EMAIL_ALREADY_EXISTS"),
        "stale_version": ("VersionMismatch", "VERSION_MISMATCH"),
        "missing_request": ("StatusRequestNotFound", "STATUS_REQUEST_NOT_FOUND"),
        "reused_key": ("IdempotencyKeyReused", "IDEMPOTENCY_KEY_REUSED"),
        "no_such_method": ("MethodNotFound", "METHOD_NOT_FOUND"),
        "wrong_arguments": ("IncorrectSignature", "INCORRECT_SIGNATURE"),
    }
    assert {name: (errors[name]["class"], errors[name]["code"]) for name in expected} == expected
    assert errors["stale_version"]["details"]["current_version"] == 1
    assert errors["reused_key"]["details"]["idempotency_key"] == unique
    assert errors["no_such_method"]["bases"][:2] == ["BadRequest", "RemoteError"]


def test_wire_format_is_nameko_s(rabbit_config, container_factory):
    from nameko.extensions import DependencyProvider
    from nameko.rpc import rpc

    class WorkerContext(DependencyProvider):
        def get_dependency(self, worker_ctx):
            return worker_ctx

    class Echo:
        name = "echo"
        context = WorkerContext()

        @rpc
        def echo(self, *args, **kwargs):
            data = self.context.context_data
            return {
                "args": args,
                "kwargs": kwargs,
                "types": [type(arg).__name__ for arg in args],
                "call_id_stack": self.context.call_id_stack,
                "context": {key: value for key, value in data.items() if key != "call_id_stack"},
            }

    container_factory(Echo, rabbit_config).start()
    seen = run_client("wire", url=rabbit_config["AMQP_URI"])

    request = seen["request"]  # as a tap queue bound to echo.* received it
    assert (request["exchange"], request["routing_key"]) == ("nameko-rpc", "echo.echo")
    assert (request["content_type"], request["content_encoding"], request["delivery_mode"]) == (
        "application/json",
        "utf-8",
        2,
    )
    assert re.fullmatch(r"pika_client-reply-[0-9a-f-]{36}", request["reply_to"]) and request["correlation_id"]
    caller_id = request["headers"]["nameko.call_id_stack"][0]
    assert re.fullmatch(r"pika_client\.[0-9a-f-]{36}", caller_id)
    correlation_id = request["headers"]["nameko.correlation_id"]  # a new one per call: none was given
    assert re.fullmatch(r"[0-9a-f-]{36}", correlation_id) and correlation_id != request["correlation_id"]
    assert request["headers"] == {
        "nameko.call_id_stack": [caller_id],
        "nameko.correlation_id": correlation_id,
        "nameko.user_id": "u-1",
        "nameko.language": "pt-BR",
    }
    assert request["body"] == {
        "args": [
            1,
            "dois",
            {"__type__": "datetime", "__value__": "2026-03-01T12:30:00+00:00"},
            {"__type__": "decimal", "__value__": "3.10"},
        ],
        "kwargs": {"flag": True},
    }

    echoed = seen["echoed"]  # what the nameko worker saw, and what came back
    assert echoed["types"] == ["int", "str", "datetime", "Decimal"]
    assert echoed["call_id_stack"][0] == caller_id and echoed["call_id_stack"][1].startswith("echo.echo.")
    assert echoed["context"] == {"user_id": "u-1", "language": "pt-BR", "correlation_id": correlation_id}
    assert seen["returned_types"] == ["int", "str", "datetime", "Decimal"]


def test_unknown_service_fails_fast_and_stopped_service_times_out(config, services):
    from nameko.testing.utils import get_container

    from services.status import StatusService

    get_container(services, StatusService).stop()  # its durable queue rpc-status stays, unconsumed

    seen = run_client("unknown_and_timeout", url=config["AMQP_URI"])

    # upper bounds with room for a loaded machine, each well below the 5 s the call would take otherwise
    assert seen["unknown"]["class"] == "UnknownService" and seen["unknown"]["code"] == "UNKNOWN_SERVICE"
    assert seen["unknown"]["elapsed"] < 2.5  # no waiting for a timeout
    assert seen["timeout"]["class"] == "RpcTimeout" and seen["timeout"]["code"] == "RPC_TIMEOUT"
    assert 1.0 <= seen["timeout"]["elapsed"] < 3.5  # the client's timeout
    assert seen["per_call_timeout"]["class"] == "RpcTimeout"
    assert 0.5 <= seen["per_call_timeout"]["elapsed"] < 3.5  # the call's, not the client's 5 s
    assert seen["afterwards"] == {"service": "students", "ok": True}  # the connection survived the timeouts


def test_many_threads_share_one_client(config, services, unique):
    seen = run_client("threads", url=config["AMQP_URI"], unique=unique, threads=8, calls=200)

    assert seen["errors"] == [] and seen["wrong"] == []
    assert seen["correct"] == 8 * 200
    assert seen["connections"] == 8  # one per thread
    assert seen["open_after_close"] == 0


def test_published_event_is_handled_by_the_status_service(config, services, unique):
    request_id = str(uuid.uuid4())
    seen = run_client("publish_event", url=config["AMQP_URI"], unique=unique, request_id=request_id)

    request = seen["request"]
    assert request["request_id"] == request_id and request["state"] == "applied"
    assert (request["status"], request["reason"], request["actor"]) == ("active", "via pika", "pika-client")
    assert [h["request_id"] for h in seen["history"]] == [request_id]
    assert seen["unroutable"] == {"class": "UnroutableEvent", "code": "UNROUTABLE_EVENT"}
    assert seen["not_mandatory"] == "published"


def test_calls_publishes_and_subscribers_carry_correlation_ids(config, services, unique):
    queue = f"evt-status-student_status_changed--pika_corr_{unique}"
    seen = run_client("correlation", url=config["AMQP_URI"], unique=unique, queue=queue)

    uuid_like = re.compile(r"[0-9a-f-]{36}")
    assert seen["given"] == f"pika-{unique}"  # the service recorded the call's own id
    assert uuid_like.fullmatch(seen["generated"]) and seen["generated"] != seen["given"]
    assert seen["client_wide"] == [f"app-{unique}"] * 2  # the client's context_data: every call
    assert seen["error"] == {"class": "StudentNotFound", "correlation_id": f"err-{unique}"}
    assert uuid_like.fullmatch(seen["error_without_id"])
    assert seen["refused"] == "ValueError"
    assert seen["published"] == {"returned": f"pub-{unique}", "recorded": f"pub-{unique}"}
    assert uuid_like.fullmatch(seen["published_without_id"])
    # the subscriber's callback got the event's id (its header), and each change names its own
    assert seen["received"] == [[f"sub-{unique}", [f"sub-{unique}"]]]


def test_calls_publishes_and_subscribers_continue_the_program_s_trace(config, services, spans, unique):
    """A program with an OpenTelemetry SDK: its calls and publishes are spans whose children the
    services' workers are, and its subscriber handles an event under the span that published it."""
    queue = f"evt-status-student_status_changed--pika_trace_{unique}"
    seen = run_client("traced", url=config["AMQP_URI"], unique=unique, queue=queue)
    client_spans = {s["name"]: s for s in seen["spans"]}
    app = client_spans["the program's request"]
    call, publish = client_spans["students/create_student"], client_spans["publish gateway.events"]
    assert (call["kind"], publish["kind"]) == ("CLIENT", "PRODUCER")
    assert call["parent"] == publish["parent"] == app["span"] and {call["trace"], publish["trace"]} == {app["trace"]}

    def service_span(name: str, parent: str) -> dict:
        found = [
            s
            for s in spans.get_finished_spans()
            if s.name == name and s.parent and _hex(s.parent.span_id, 16) == parent
        ]
        assert len(found) == 1, (name, [s.name for s in spans.get_finished_spans()])
        return found[0]

    worker = service_span("students/create_student", call["span"])
    assert (worker.kind.name, _hex(worker.context.trace_id, 32)) == ("SERVER", app["trace"])
    handled = service_span("process gateway.status_change_requested", publish["span"])
    assert handled.attributes["messaging.consumer.group.name"] == "status"

    # the subscriber's span: a child of the status service's publish of the change, in the program's trace
    received = client_spans["process status.student_status_changed"]
    assert received["kind"] == "CONSUMER" and received["trace"] == app["trace"]
    published = [s for s in spans.get_finished_spans() if _hex(s.context.span_id, 16) == received["parent"]]
    assert [s.name for s in published] == ["publish status.events"]
    assert seen["callback_saw"] == received["span"]  # the callback ran inside that span


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def test_subscriber_receives_nameko_events_once_and_after_a_restart(config, services, unique):
    queue = f"evt-status-student_status_changed--pika_test_{unique}"
    seen = run_client("subscribe", url=config["AMQP_URI"], unique=unique, queue=queue)

    first, second = seen["first_request"], seen["second_request"]
    assert [e["request_id"] for e in seen["received"]] == [first, second]  # each exactly once, in order
    assert [(e["from_status"], e["to_status"]) for e in seen["received"]] == [
        ("enrolled", "active"),
        ("active", "suspended"),
    ]
    assert seen["left_after_first_run"] == 0  # acked
    assert seen["waiting_while_stopped"] == 1  # durable queue kept it
    assert seen["attempts_for_second"] == 2  # the callback failed once: requeued, then handled
    assert seen["left_at_end"] == 0


def test_client_and_subscriber_reconnect_after_the_broker_drops_them(config, services, unique, request):
    seen = run_client(
        "reconnect",
        url=config["AMQP_URI"],
        api=request.config.getoption("RABBIT_API_URI"),
        vhost=config["AMQP_URI"].rsplit("/", 1)[1],
        unique=unique,
    )

    assert seen["closed_by_broker"] >= 2  # the client's and the subscriber's connections
    assert seen["before"] == seen["after"] == {"service": "students", "ok": True}
    assert any(line.startswith("RpcClient: connection lost") for line in seen["log"]), seen["log"]
    assert any(line.startswith("<EventSubscriber students.student_updated") for line in seen["log"]), seen["log"]
    assert seen["event_after_reconnect"] is True


def test_client_publisher_and_subscriber_take_the_next_node_when_the_first_is_down(config, services, unique):
    from tests.integration.test_several_nodes import dead_node_first

    url = dead_node_first(config["AMQP_URI"])
    seen = run_client("several_nodes", url=url, unique=unique, queue=f"evt-status-student_status_changed--{unique}")

    assert seen["ping"] == {"service": "students", "ok": True}
    assert seen["changed"] == [["enrolled", "active"]]  # a nameko event, through the subscriber
    assert seen["own_event"] == {"hello": unique}  # published and received by the client itself
    # two subscribers, the RPC client and the publisher: each on the node that is up
    assert seen["connected_to"] == [urllib.parse.urlsplit(config["AMQP_URI"]).port] * 4


# No broker needed: the error table and the body codec.


@pytest.mark.parametrize(
    ("exc_path", "expected"),
    [
        ("services.exceptions.ValidationFailed", "ValidationFailed"),
        ("services.exceptions.StudentNotFound", "StudentNotFound"),
        ("services.exceptions.StatusRequestNotFound", "StatusRequestNotFound"),
        ("services.exceptions.EmailAlreadyExists", "EmailAlreadyExists"),
        ("services.exceptions.VersionMismatch", "VersionMismatch"),
        ("services.exceptions.IdempotencyKeyReused", "IdempotencyKeyReused"),
        ("nameko.exceptions.MethodNotFound", "MethodNotFound"),
        ("nameko.exceptions.IncorrectSignature", "IncorrectSignature"),
        ("nameko.exceptions.MalformedRequest", "MalformedRequest"),
        ("builtins.KeyError", "RemoteError"),
    ],
)
def test_every_wire_error_maps_to_its_class(exc_path, expected):
    from nameko.exceptions import serialize

    from clients.errors import remote_error

    module, name = exc_path.rsplit(".", 1)
    original = getattr(importlib.import_module(module), name)("boom", {"field": ["bad"]})
    error = remote_error(serialize(original))

    assert type(error).__name__ == expected
    assert (error.exc_path, error.exc_type) == (exc_path, name)
    if module == "services.exceptions":
        assert (error.code, error.message, error.details) == (original.code, "boom", {"field": ["bad"]})


def test_bodies_are_encoded_as_kombu_encodes_them():
    from kombu.utils import json as kombu_json

    from clients import codec

    value = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "day": date(2026, 1, 2),
        "amount": Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "raw": b"\xff",
        "plain": [1, "two", None, True],
    }
    assert codec.loads(kombu_json.dumps(value).encode()) == value
    assert kombu_json.loads(codec.dumps(value)) == value


# --- the child side: the client, without eventlet ------------------------------

SCENARIOS: dict[str, Callable[..., dict]] = {}
FORBIDDEN = ("eventlet", "nameko", "kombu", "services")


def scenario(function: Callable[..., dict]) -> Callable[..., dict]:
    SCENARIOS[function.__name__] = function
    return function


def caught(call: Callable[[], Any]) -> dict:
    """What ``call`` raised, as the test wants to see it."""
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return {
            "class": type(exc).__name__,
            "bases": [base.__name__ for base in type(exc).__mro__[1:-3]],  # up to Exception
            "code": getattr(exc, "code", None),
            "message": getattr(exc, "message", str(exc)),
            "details": getattr(exc, "details", None),
            "exc_path": getattr(exc, "exc_path", None),
            "elapsed": round(time.monotonic() - started, 3),
        }
    raise AssertionError(f"{call} did not raise")


def poll(fetch: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Call ``fetch`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
    return value


def applied(client: Any, request_id: str) -> dict | None:
    from clients import StatusRequestNotFound

    try:
        request = client.status.get_status_request(request_id)
    except StatusRequestNotFound:  # not recorded yet
        return None
    return request if request["state"] != "pending" else None


def new_student(client: Any, unique: str, name: str = "ada") -> dict:
    return client.students.create_student(
        {"name": name.title(), "email": f"{name}.{unique}@school.example", "course": f"course-{unique}"}
    )


def queue_depth(url: str, queue: str) -> int:
    import pika

    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        return connection.channel().queue_declare(queue, passive=True).method.message_count


@scenario
def round_trip_and_errors(url: str, unique: str) -> dict:
    from clients import RpcClient

    with RpcClient(url, timeout=5.0) as client:
        created = new_student(client, unique)
        student_id = created["id"]
        got = client.call("students", "get_student", student_id)  # before any change: still as created
        requested = client.status.request_status_change(student_id, "active", idempotency_key=unique)
        errors = {
            "missing_student": caught(lambda: client.students.get_student(10**7)),
            "invalid_student": caught(lambda: client.students.create_student({"name": "", "email": "nope"})),
            "duplicate_email": caught(lambda: new_student(client, unique)),
            "stale_version": caught(
                lambda: client.students.update_student(student_id, {"name": "x"}, expected_version=7)
            ),
            "missing_request": caught(lambda: client.status.get_status_request(str(uuid.uuid4()))),
            "reused_key": caught(
                lambda: client.status.request_status_change(student_id, "withdrawn", idempotency_key=unique)
            ),
            "no_such_method": caught(lambda: client.students.enroll_everyone()),
            "wrong_arguments": caught(lambda: client.students.get_student()),
        }
        return {
            "forbidden_modules": sorted({name.split(".")[0] for name in sys.modules} & set(FORBIDDEN)),
            "created": created,
            "got": got,
            "requested": requested,
            "settled": poll(lambda: applied(client, requested["request_id"])),  # waited for through the API
            "ping": client["status"].ping(),
            "errors": errors,
        }


@scenario
def wire(url: str) -> dict:
    import pika

    from clients import RpcClient

    with pika.BlockingConnection(pika.URLParameters(url)) as tap:
        channel = tap.channel()
        channel.queue_declare("tap", exclusive=True)
        channel.queue_bind("tap", "nameko-rpc", routing_key="echo.*")
        with RpcClient(url, context_data={"user_id": "u-1", "language": "pt-BR"}) as client:
            when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
            echoed = client.echo.echo(1, "dois", when, Decimal("3.10"), flag=True)
        method, properties, body = channel.basic_get("tap", auto_ack=True)
    return {
        "request": {
            "exchange": method.exchange,
            "routing_key": method.routing_key,
            "content_type": properties.content_type,
            "content_encoding": properties.content_encoding,
            "delivery_mode": properties.delivery_mode,
            "reply_to": properties.reply_to,
            "correlation_id": properties.correlation_id,
            "headers": properties.headers,
            "body": json.loads(body),
        },
        "echoed": {key: echoed[key] for key in ("types", "call_id_stack", "context")},
        "returned_types": [type(arg).__name__ for arg in echoed["args"]],
    }


@scenario
def unknown_and_timeout(url: str) -> dict:
    from clients import RpcClient

    with RpcClient(url, timeout=5.0) as client, RpcClient(url, timeout=1.0) as impatient:
        return {
            "unknown": caught(lambda: client.call("nosuch", "ping")),
            "timeout": caught(lambda: impatient.status.ping()),
            "per_call_timeout": caught(lambda: client.status.ping(timeout=0.5)),
            "afterwards": client.students.ping(),
        }


@scenario
def threads(url: str, unique: str, threads: int, calls: int) -> dict:
    from clients import RpcClient

    client = RpcClient(url, timeout=10.0)
    ids = [new_student(client, unique, f"student{n}")["id"] for n in range(threads)]
    correct, wrong, errors = [0] * threads, [], []

    def work(n: int) -> None:
        try:
            for i in range(calls):
                student_id = ids[(n + i) % len(ids)]
                if client.students.get_student(student_id)["id"] == student_id:
                    correct[n] += 1
                else:
                    wrong.append(student_id)
        except Exception as exc:
            errors.append(repr(exc))
        # the connection stays open until the thread has ended: counted below

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    connections = len(client._links._links) - 1  # minus the main thread's
    client.close()  # the main thread's, and those of the threads that have ended
    return {
        "correct": sum(correct),
        "wrong": wrong,
        "errors": errors,
        "connections": connections,
        "open_after_close": len(client._links._links),
    }


@scenario
def publish_event(url: str, unique: str, request_id: str) -> dict:
    from clients import EventPublisher, RpcClient

    with RpcClient(url) as client, EventPublisher(url) as publisher:
        student = new_student(client, unique)
        publisher.publish(
            "gateway",
            "status_change_requested",
            {
                "request_id": request_id,
                "student_id": student["id"],
                "status": "active",
                "reason": "via pika",
                "actor": "pika-client",
                "idempotency_key": None,
            },
        )
        request = poll(lambda: applied(client, request_id))
        unroutable = caught(lambda: publisher.publish("gateway", "nobody_listens", {}))
        publisher.publish("gateway", "nobody_listens", {}, mandatory=False)
        return {
            "request": request,
            "history": client.status.get_status_history(student["id"])["items"],
            "unroutable": {"class": unroutable["class"], "code": unroutable["code"]},
            "not_mandatory": "published",
        }


@scenario
def subscribe(url: str, unique: str, queue: str) -> dict:
    from clients import EventSubscriber, RpcClient

    received: list[dict] = []
    attempts: list[str] = []
    fail_once: set[str] = set()

    def handle(payload: dict) -> None:  # one message: a batch of changes
        for change in payload["changes"]:
            attempts.append(change["request_id"])
            if change["request_id"] in fail_once:
                fail_once.discard(change["request_id"])
                raise RuntimeError("a transient failure")
            received.append(change)

    @contextlib.contextmanager
    def subscribed() -> Iterator[None]:
        subscriber = EventSubscriber(url, "status", "student_status_changed", queue, handle, retry_delay=0.2)
        thread = threading.Thread(target=subscriber.run)
        thread.start()
        try:
            assert subscriber.ready.wait(10), "subscriber not ready"
            yield
        finally:
            subscriber.stop()
            thread.join(10)
        assert not thread.is_alive(), "run() did not return after stop()"

    def received_request(request_id: str) -> Callable[[], bool]:
        return lambda: any(event["request_id"] == request_id for event in received)

    with RpcClient(url) as client:
        student = new_student(client, unique)

        def change(status: str) -> str:
            request_id = client.status.request_status_change(student["id"], status)["request_id"]
            poll(lambda: applied(client, request_id))
            return request_id

        with subscribed():
            first = change("active")
            poll(received_request(first))
        left_after_first_run = queue_depth(url, queue)

        second = change("suspended")  # while nobody consumes
        waiting = poll(lambda: queue_depth(url, queue))
        fail_once.add(second)
        with subscribed():
            poll(received_request(second))
        return {
            "first_request": first,
            "second_request": second,
            "received": received,
            "left_after_first_run": left_after_first_run,
            "waiting_while_stopped": waiting,
            "attempts_for_second": attempts.count(second),
            "left_at_end": queue_depth(url, queue),
        }


@scenario
def several_nodes(url: str, unique: str, queue: str) -> dict:
    """``url`` lists a node that is down, then one that is up."""
    import pika

    from clients import EventPublisher, EventSubscriber, RpcClient

    connected_to: list[int] = []
    real_connection = pika.BlockingConnection

    def recording_connection(parameters: Any) -> Any:  # the port of the node each connection took
        connection = real_connection(parameters)
        connected_to.append(connection._impl.params.port)
        return connection

    pika.BlockingConnection = recording_connection
    changes: list[dict] = []
    own: list[dict] = []
    subscribers = [
        EventSubscriber(url, "status", "student_status_changed", queue, lambda p: changes.extend(p["changes"])),
        EventSubscriber(url, f"pika_test_{unique}", "hello", f"{queue}-own", own.append),
    ]
    threads = [threading.Thread(target=subscriber.run) for subscriber in subscribers]
    for thread in threads:
        thread.start()
    try:
        with RpcClient(url) as client, EventPublisher(url) as publisher:
            ping = client.students.ping()
            assert all(subscriber.ready.wait(10) for subscriber in subscribers)
            student = new_student(client, unique)
            client.status.request_status_change(student["id"], "active")
            poll(lambda: changes)
            publisher.publish(f"pika_test_{unique}", "hello", {"hello": unique})
            poll(lambda: own)
    finally:
        for subscriber in subscribers:
            subscriber.stop()
        for thread in threads:
            thread.join(10)
    return {
        "ping": ping,
        "changed": [(c["from_status"], c["to_status"]) for c in changes],
        "own_event": own[0],
        "connected_to": connected_to,
    }


@scenario
def across_a_lost_node(url: str, unique: str, queue: str, ready_file: str, go_file: str) -> dict:
    """Connected to the first node of ``url``; once ``ready_file`` is written the test kills that
    node and writes ``go_file``: the client, publisher and subscriber carry on through the next."""
    from clients import BrokerError, EventPublisher, EventSubscriber, RpcClient

    log: list[str] = []
    logging.getLogger("clients").addHandler(Recorder(log))
    logging.getLogger("clients").setLevel(logging.INFO)
    changes: list[dict] = []
    own: list[dict] = []
    # quorum queues: a classic one would stay behind on the lost node
    options = {"reconnect_delay": 0.2, "queue_arguments": {"x-queue-type": "quorum"}}
    subscribers = [
        EventSubscriber(
            url, "status", "student_status_changed", queue, lambda p: changes.extend(p["changes"]), **options
        ),
        EventSubscriber(url, f"pika_test_{unique}", "hello", f"{queue}-own", own.append, **options),
    ]
    threads = [threading.Thread(target=subscriber.run) for subscriber in subscribers]
    for thread in threads:
        thread.start()

    def changed(request_id: str) -> Callable[[], bool]:
        return lambda: any(change["request_id"] == request_id for change in changes)

    try:
        with RpcClient(url, timeout=10) as client, EventPublisher(url) as publisher:
            assert all(subscriber.ready.wait(10) for subscriber in subscribers)
            student = new_student(client, unique)
            first = client.status.request_status_change(student["id"], "active")["request_id"]
            poll(changed(first))
            publisher.publish(f"pika_test_{unique}", "hello", {"n": 1})
            poll(lambda: len(own) == 1)
            Path(ready_file).touch()
            poll(lambda: Path(go_file).exists(), timeout=60)
            ping = client.students.ping()  # the lost connection is noticed before the call is sent
            second = client.status.request_status_change(student["id"], "suspended")["request_id"]
            poll(changed(second), timeout=60)
            # the queue it goes to was led by the lost node: until the others elect a leader, the
            # broker nacks the publish (BrokerError), and the publisher sends it again
            nacked = []
            while True:
                try:
                    publisher.publish(f"pika_test_{unique}", "hello", {"n": 2})
                    break
                except BrokerError as exc:
                    nacked.append(exc.details["reason"])
                    assert len(nacked) < 60, nacked
                    time.sleep(0.5)
            poll(lambda: len(own) == 2, timeout=60)
    finally:
        for subscriber in subscribers:
            subscriber.stop()
        for thread in threads:
            thread.join(10)
    return {
        "ping": ping,
        "changes": [(c["from_status"], c["to_status"]) for c in changes],
        "own": [event["n"] for event in own],
        "nacked": nacked,
        "log": log,
    }


@scenario
def correlation(url: str, unique: str, queue: str) -> dict:
    from clients import EventPublisher, EventSubscriber, RpcClient, StudentNotFound

    received: list[tuple[str | None, list[dict]]] = []

    def on_change(payload: dict, correlation_id: str | None) -> None:
        received.append((correlation_id, payload["changes"]))

    with RpcClient(url) as client, EventPublisher(url) as publisher:
        student = new_student(client, unique)
        given = client.status.request_status_change(student["id"], "active", correlation_id=f"pika-{unique}")
        generated = client.status.request_status_change(student["id"], "active")
        with RpcClient(url, context_data={"correlation_id": f"app-{unique}"}) as app:
            client_wide = [app.status.request_status_change(student["id"], "active") for _ in range(2)]
        try:
            client.students.get_student(10**7, correlation_id=f"err-{unique}")
        except StudentNotFound as exc:
            error = {"class": type(exc).__name__, "correlation_id": exc.correlation_id}
        try:
            client.students.get_student(10**7)
        except StudentNotFound as exc:
            error_without_id = exc.correlation_id
        refused = caught(lambda: client.students.ping(correlation_id="two words"))["class"]

        request_id = str(uuid.uuid4())
        command = {"request_id": request_id, "student_id": student["id"], "status": "active"}
        returned = publisher.publish("gateway", "status_change_requested", command, correlation_id=f"pub-{unique}")
        recorded = poll(lambda: applied(client, request_id))["correlation_id"]
        published_without_id = publisher.publish("gateway", "nobody_listens", {}, mandatory=False)

        # a student of its own: its one change is alone in its message, whatever else is in flight
        other = new_student(client, unique, "bea")
        subscriber = EventSubscriber(url, "status", "student_status_changed", queue, on_change)
        thread = threading.Thread(target=subscriber.run)
        thread.start()
        try:
            assert subscriber.ready.wait(10), "subscriber not ready"
            client.status.request_status_change(other["id"], "active", correlation_id=f"sub-{unique}")

            def about_other() -> list[list]:
                return [
                    [header, [change["correlation_id"] for change in changes]]
                    for header, changes in received
                    if any(change["student_id"] == other["id"] for change in changes)
                ]

            poll(about_other)
        finally:
            subscriber.stop()
            thread.join(10)
        return {
            "given": given["correlation_id"],
            "generated": generated["correlation_id"],
            "client_wide": [request["correlation_id"] for request in client_wide],
            "error": error,
            "error_without_id": error_without_id,
            "refused": refused,
            "published": {"returned": returned, "recorded": recorded},
            "published_without_id": published_without_id,
            "received": about_other(),
        }


@scenario
def traced(url: str, unique: str, queue: str) -> dict:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from clients import EventPublisher, EventSubscriber, RpcClient

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("the program")
    callback_saw: list[str] = []

    def on_change(payload: dict) -> None:
        if any(change["request_id"] == request_id for change in payload["changes"]):
            callback_saw.append(f"{trace.get_current_span().get_span_context().span_id:016x}")

    request_id = str(uuid.uuid4())
    with RpcClient(url) as client, EventPublisher(url) as publisher:
        subscriber = EventSubscriber(url, "status", "student_status_changed", queue, on_change)
        thread = threading.Thread(target=subscriber.run)
        thread.start()
        try:
            assert subscriber.ready.wait(10), "subscriber not ready"
            with tracer.start_as_current_span("the program's request"):
                student = new_student(client, unique)
                command = {"request_id": request_id, "student_id": student["id"], "status": "active"}
                publisher.publish("gateway", "status_change_requested", command)
            poll(lambda: callback_saw)
        finally:
            subscriber.stop()
            thread.join(10)

    def described(span: Any) -> dict:
        return {
            "name": span.name,
            "kind": span.kind.name,
            "trace": f"{span.context.trace_id:032x}",
            "span": f"{span.context.span_id:016x}",
            "parent": f"{span.parent.span_id:016x}" if span.parent else None,
        }

    found = [described(s) for s in exporter.get_finished_spans()]
    mine = [s for s in found if s["name"] != "process status.student_status_changed" or s["span"] in callback_saw]
    return {"spans": mine, "callback_saw": callback_saw[0]}


@scenario
def reconnect(url: str, api: str, vhost: str, unique: str) -> dict:
    from clients import EventSubscriber, RpcClient

    parts = urllib.parse.urlsplit(api)
    auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    base = f"{parts.scheme}://{parts.hostname}:{parts.port}/api"

    def management(method: str, path: str) -> Any:
        request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def connections(role: str) -> list[str]:
        listed = management("GET", f"/vhosts/{urllib.parse.quote(vhost, safe='')}/connections")
        return [c["name"] for c in listed if c["client_properties"].get("connection_name", "").startswith(role)]

    reconnects: list[str] = []
    logging.getLogger("clients").addHandler(Recorder(reconnects))
    logging.getLogger("clients").setLevel(logging.INFO)
    received: list[dict] = []
    queue = f"evt-students-student_updated--pika_test_{unique}"
    subscriber = EventSubscriber(url, "students", "student_updated", queue, received.append, reconnect_delay=0.2)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    try:
        with RpcClient(url) as client:
            before = client.students.ping()
            assert subscriber.ready.wait(10)
            doomed = poll(lambda: connections("RpcClient")) + poll(lambda: connections("EventSubscriber"))
            for name in doomed:  # CONNECTION_FORCED, as in a broker restart; the idle client's first
                management("DELETE", f"/connections/{urllib.parse.quote(name, safe='')}")
            # the consuming subscriber answers the close at once; the idle client reads it on its next call
            poll(lambda: not set(doomed) & set(connections("EventSubscriber")))
            after = client.students.ping()  # no error: the dead connection is noticed before publishing
            student = new_student(client, unique)
            client.students.update_student(student["id"], {"name": "Ada L."})
            poll(lambda: any(event["student"]["id"] == student["id"] for event in received))
    finally:
        subscriber.stop()
        thread.join(10)
    return {
        "closed_by_broker": len(doomed),
        "before": before,
        "after": after,
        "log": reconnects,
        "event_after_reconnect": True,
    }


class Recorder(logging.Handler):
    def __init__(self, records: list[str]):
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def main(argv: list[str]) -> None:
    name, params = argv[0], json.loads(argv[1])
    print(json.dumps(SCENARIOS[name](**params), default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
