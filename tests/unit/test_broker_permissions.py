"""tools.broker's patterns against the names the code itself declares, binds, publishes to and
consumes from, and against RabbitMQ's rules for which operation needs which permission.

The names come from the real code paths, with the broker left out: a service class's
extensions bound to a container and set up with nameko's queue consumer unplugged, the
outbox relay's and the gateway dispatcher's declarations, the retry and parking queues, the
pika client preparing a connection (on a recording channel), nameko's standalone proxy
(``nameko shell``) setting up its reply listener. tests/integration/test_broker_permissions.py
runs the processes under users limited to these patterns on a real broker.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from unittest.mock import Mock, patch

import pytest
from kombu import Queue
from nameko.containers import ServiceContainer
from nameko.events import BROADCAST, EventDispatcher, EventHandler
from nameko.extensions import DependencyProvider
from nameko.messaging import QueueConsumer
from nameko.rpc import ReplyListener, Rpc, RpcConsumer, RpcProxy, get_rpc_exchange
from nameko.standalone.rpc import PollingQueueConsumer

from clients.rpc import RpcClient
from gateway.service import GatewayService
from services._status.applier import StatusApplier
from services.certificates import CertificatesService
from services.infra.outbox import Outbox, OutboxRelay
from services.infra.parking import dead_letter_queue
from services.infra.retry import ReliableEventHandler, retry_delays
from services.infra.rpc import standalone_proxy
from services.infra.settings import Settings
from services.infra.topology import subscriber_queues
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService
from tests.conftest import signing_key_path
from tools import broker

CONFIG = {
    "AMQP_URI": "memory://",
    "EVENT_RETRY_ATTEMPTS": 5,
    "EVENT_RETRY_BASE_DELAY": 1,
    "REQUEST_ID_SECRET": "unit-test-secret",  # the gateway refuses to bind without its secrets
    "API_KEY_SECRET": "unit-test-secret",
    "CERTIFICATE_SIGNING_KEY": signing_key_path(),  # and certificates without its key
}
SERVICE_CLASSES = {
    "students": StudentsService,
    "status": StatusService,
    "certificates": CertificatesService,
    "notifications": NotificationsService,
    "gateway": GatewayService,
}


@dataclass
class Usage:
    """Concrete names a process needs each permission on, by RabbitMQ's rules."""

    configure: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    consumed: set[str] = field(default_factory=set)  # queues it takes messages from
    owned: set[str] = field(default_factory=set)  # queues only it may declare or delete

    def declare(self, queue: Queue) -> None:
        """kombu's ``Queue.declare``: its exchange (unless nameless or ``amq.*``), the queue, the binding."""
        exchange = queue.exchange.name if queue.exchange else ""
        if exchange and not exchange.startswith("amq."):
            self.configure.add(exchange)  # exchange.declare
        self.configure.add(queue.name)  # queue.declare
        if exchange:
            self.write.add(queue.name)  # queue.bind: write on the queue ...
            self.read.add(exchange)  # ... read on the exchange
        arguments = queue.queue_arguments or {}
        if "x-dead-letter-exchange" in arguments:  # queue.declare with a dead-letter exchange
            self.write.add(arguments["x-dead-letter-exchange"] or "amq.default")
            self.read.add(queue.name)

    def consume(self, queue: Queue | str) -> None:  # basic.consume, basic.get, queue.purge
        name = queue if isinstance(queue, str) else queue.name
        self.read.add(name)
        self.consumed.add(name)

    def publish(self, exchange: str) -> None:  # basic.publish
        self.write.add(exchange or "amq.default")


@contextmanager
def unplugged() -> Iterator[None]:
    """Extensions set up without a broker: nameko's consumers only record their providers."""
    with patch.object(QueueConsumer, "register_provider"), patch.object(PollingQueueConsumer, "register_provider"):
        yield


def service_usage(service_cls: type) -> Usage:
    usage = Usage()
    container = ServiceContainer(service_cls, CONFIG)
    settings = Settings.from_config(CONFIG)
    parking = dead_letter_queue(container.service_name, settings)
    with unplugged():
        for extension in container.extensions:
            if isinstance(extension, RpcConsumer):
                extension.setup()
                usage.declare(extension.queue)
                usage.consume(extension.queue)
                usage.owned.add(extension.queue.name)
                usage.publish(get_rpc_exchange(CONFIG).name)  # replies
                usage.declare(parking)  # malformed requests are parked (services.infra.inbound)
                usage.publish("")
            elif isinstance(extension, ReplyListener):
                extension.setup()
                usage.declare(extension.queue)
                usage.consume(extension.queue)
                usage.owned.add(extension.queue.name)
                usage.publish(get_rpc_exchange(CONFIG).name)  # requests
            elif isinstance(extension, EventHandler) and extension.handler_type == BROADCAST:
                extension.setup()  # a queue of the process's own, exclusive
                usage.declare(extension.queue)
                usage.consume(extension.queue)
                usage.owned.add(extension.queue.name)
            elif isinstance(extension, EventHandler):
                assert isinstance(extension, ReliableEventHandler), extension
                with patch("services.infra.retry.get_connection"):  # declares its retry and parking queues
                    extension.setup()
                usage.declare(extension.queue)
                usage.consume(extension.queue)
                usage.owned.add(extension.queue.name)
                assert len(extension.delay_queues) == len(retry_delays(settings))
                for retry_queue in extension.delay_queues:
                    usage.declare(retry_queue)
                    usage.owned.add(retry_queue.name)
                usage.declare(extension.parking)
                usage.publish("")  # retries and parking go through the default exchange
            elif isinstance(extension, EventDispatcher):
                extension.setup()
                for entity in extension.declare:
                    declare_entity(usage, entity)
                usage.publish(extension.exchange.name)
            elif isinstance(extension, Outbox | StatusApplier):
                relay = OutboxRelay(None, None, CONFIG, container.service_name)
                for entity in relay.declare:
                    declare_entity(usage, entity)
                usage.publish(relay.exchange.name)
        if any(e.attr_name == "dead_letters" for e in container.dependencies):  # DeadLetterRpc
            usage.declare(parking)
            usage.consume(parking)  # list, replay, purge
            usage.owned.add(parking.name)
            usage.publish("")  # replay
    return usage


def declare_entity(usage: Usage, entity) -> None:
    if isinstance(entity, Queue):
        usage.declare(entity)
    else:
        usage.configure.add(entity.name)


def client_usage() -> Usage:
    """What the pika client's ``RpcClient`` does on a new connection, and when it calls."""
    usage = Usage()
    client = RpcClient("amqp://nowhere/")
    channel = Mock()
    client._prepare(SimpleNamespace(channel=channel, state={}))
    (exchange,), _ = channel.exchange_declare.call_args
    (reply_queue,), _ = channel.queue_declare.call_args
    (bound_queue, bound_exchange), _ = channel.queue_bind.call_args
    (consumed, _callback), _ = channel.basic_consume.call_args
    usage.configure |= {exchange, reply_queue}
    usage.write.add(bound_queue)
    usage.read.add(bound_exchange)
    usage.consume(consumed)
    usage.owned.add(reply_queue)
    usage.publish(client.exchange)
    return usage


def shell_usage() -> Usage:
    """nameko's standalone proxy, as tools/shell.py starts it for ``nameko shell``."""
    usage = Usage()
    proxy = standalone_proxy(CONFIG)
    with unplugged():
        proxy.start()
    queue = proxy._reply_listener.queue
    usage.declare(queue)
    usage.consume(queue)
    usage.owned.add(queue.name)
    usage.publish(get_rpc_exchange(CONFIG).name)
    return usage


USAGE: dict[str, Usage] = {
    **{name: service_usage(cls) for name, cls in SERVICE_CLASSES.items()},
    "client": client_usage(),
    "shell": shell_usage(),
}


def allows(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None  # RabbitMQ: an unanchored search; ours are anchored


def role_of(service_cls: type) -> broker.Role:
    dependencies = [value for _, value in inspect.getmembers(service_cls) if isinstance(value, DependencyProvider)]
    entrypoints = [
        entrypoint
        for _, method in inspect.getmembers(service_cls, inspect.isfunction)
        for entrypoint in getattr(method, "nameko_entrypoints", ())
    ]
    return broker.Role(
        serves_rpc=any(isinstance(e, Rpc) for e in entrypoints),
        calls_rpc=any(isinstance(d, RpcProxy) for d in dependencies),
        publishes_events=any(isinstance(d, EventDispatcher | Outbox | StatusApplier) for d in dependencies),
        follows_events=tuple(
            sorted(
                {e.source_service for e in entrypoints if isinstance(e, EventHandler) and e.handler_type == BROADCAST}
            )
        ),
    )


def test_every_process_is_described():
    assert set(broker.PROCESSES) == set(USAGE) == {*SERVICE_CLASSES, "client", "shell"}
    assert set(broker.SERVICES) == set(SERVICE_CLASSES)


@pytest.mark.parametrize("service", SERVICE_CLASSES)
def test_roles_are_what_the_service_classes_do(service):
    assert role_of(SERVICE_CLASSES[service]) == broker.SERVICES[service]


@pytest.mark.parametrize("process", list(USAGE))
@pytest.mark.parametrize("operation", broker.OPERATIONS)
def test_each_process_may_do_what_its_code_does(process, operation):
    pattern = getattr(broker.PROCESSES[process].permissions(), operation)
    needed = getattr(USAGE[process], operation)
    assert needed, f"{process} needs no {operation} at all?"
    assert sorted(name for name in needed if not allows(pattern, name)) == []


@pytest.mark.parametrize("process", list(USAGE))
def test_nobody_else_reads_a_process_s_queues(process):
    """Least privilege: what one process consumes, no other process may consume, but for the
    subscriber queues a publisher declares ahead of its first event: RabbitMQ lets only a user that
    may read a queue create it with a dead-letter exchange (a quorum queue's poison messages)."""
    for other, grants in broker.PROCESSES.items():
        if other != process:
            read = grants.permissions().read
            consumed = USAGE[process].consumed - USAGE[other].configure
            assert sorted(q for q in consumed if allows(read, q)) == [], f"{other} reads them"


@pytest.mark.parametrize("process", list(USAGE))
def test_nobody_else_declares_or_deletes_a_process_s_own_queues(process):
    """A service's RPC, reply, handler, retry and dead-letter queues are configurable by it alone
    (a handler queue also by the publisher that declares it ahead of its first event)."""
    declared_ahead = {queue for usage in USAGE.values() for queue in usage.configure - usage.owned}
    for other, grants in broker.PROCESSES.items():
        if other != process:
            configure = grants.permissions().configure
            owned = USAGE[process].owned - declared_ahead
            assert sorted(q for q in owned if allows(configure, q)) == [], f"{other} may configure them"


def test_a_publisher_declares_its_subscribers_queues_and_nothing_else_of_theirs():
    students = broker.PROCESSES["students"].permissions()
    queue = "evt-students-student_created--status.handle_student_created"
    assert allows(students.configure, queue) and allows(students.write, queue)
    assert allows(students.read, queue)  # only so that it may create it with a dead-letter exchange
    assert not allows(students.read, "rpc-status") and not allows(students.read, "status.dead-letters")
    assert not allows(students.read, "evt-status-student_status_changed--certificates.handle_student_status_changed")


def test_quorum_declarations_need_the_reads_classic_ones_do_not():
    """The read a publisher gets on its subscribers' queues is what their quorum arguments cost."""
    for source in ("students", "status", "certificates", "gateway"):
        for queue in subscriber_queues(source, {"QUEUE_TYPE": "classic"}):
            assert not queue.queue_arguments
        for queue in subscriber_queues(source, {}):
            assert queue.queue_arguments["x-dead-letter-exchange"] == ""


def test_gateway_publishes_and_calls_but_consumes_only_its_replies():
    gateway = broker.PROCESSES["gateway"].permissions()
    assert allows(gateway.write, "gateway.events") and allows(gateway.write, "nameko-rpc")
    assert allows(gateway.read, "rpc.reply-gateway-0b5e7f0e-1d2c-4c7e-9a8f-2f5d6c7b8a9e")
    for queue in ("rpc-students", "rpc-status", "status.dead-letters"):
        assert not allows(gateway.read, queue)
    # it creates the status handler's queue with a dead-letter exchange: RabbitMQ wants read on the
    # queue and write on that exchange (the default one) from whoever creates it
    queue = "evt-gateway-status_change_requested--status.handle_status_change_requested"
    assert allows(gateway.read, queue) and allows(gateway.write, "amq.default")


@pytest.mark.parametrize("process", list(broker.PROCESSES))
def test_patterns_are_anchored_and_exact(process):
    for pattern in broker.PROCESSES[process].permissions().as_dict().values():
        assert pattern.startswith("^") and pattern.endswith("$")
        assert ".*" not in pattern and ".+" not in pattern
        re.compile(pattern)
    assert not allows(broker.PROCESSES[process].permissions().configure, "amq.default")


def test_a_union_allows_what_each_member_allows():
    union = broker.permissions(list(broker.PROCESSES))
    for process, usage in USAGE.items():
        for operation in broker.OPERATIONS:
            assert all(allows(getattr(union, operation), n) for n in getattr(usage, operation)), process
    assert broker.permissions(["client"]) == broker.PROCESSES["client"].permissions()


def test_the_empty_set_allows_nothing():
    assert broker.anchored([]) == "^$" and not allows("^$", "amq.default")


def test_names_are_escaped_literally():
    assert broker.literal("students.dead-letters") == r"students\.dead-letters"
    assert allows(f"^{broker.literal('a.b')}$", "a.b") and not allows(f"^{broker.literal('a.b')}$", "aXb")


# --- the command line ----------------------------------------------------------


def test_permissions_lists_every_process(capsys):
    assert broker.main(["permissions"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if not line.startswith(" ")] == list(broker.PROCESSES)


def test_permissions_as_a_markdown_table(capsys):
    assert broker.main(["permissions", "--process", "students,client", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| Process | configure | write | read |", "|---|---|---|---|"]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| students", "| client"]
    assert all(line.count(" | ") == 3 for line in lines[2:])  # the patterns' pipes are escaped


def setup_argv(api_uri: str = "http://admin:secret@host:15672", vhost: str = "v") -> list[str]:
    return ["setup", "--api-uri", api_uri, "--vhost", vhost, "--user", "u", "--password-env", "X"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["permissions", "--process", "billing"], {}, "unknown process 'billing'"),
        (setup_argv(), {}, "environment variable X"),
        (setup_argv(api_uri="host:15672"), {"X": "p"}, "http"),
        (setup_argv(api_uri="http://host:15672"), {"X": "p"}, "administrator's credentials"),
        (setup_argv(vhost=" "), {"X": "p"}, "--vhost"),
        (["setup", "--vhost", "v"], {}, "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, env, message, capsys, monkeypatch):
    monkeypatch.delenv("X", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = broker.main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err and message in err
    assert "Traceback" not in err


def test_setup_never_touches_the_administrator():
    api = broker.ManagementApi("http://admin:secret@nowhere:15672")
    with pytest.raises(broker.SetupError, match="administrator"):
        broker.ensure_user(api, "admin", "password")
