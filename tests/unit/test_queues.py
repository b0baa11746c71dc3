"""What each kind of queue is declared with, per ``QUEUE_TYPE``, by the code that declares it
(the services' extensions set up without a broker, the publishers' declarations, the tools)."""

from __future__ import annotations

from functools import partial
from unittest.mock import Mock, patch

import pytest
from kombu import Consumer
from nameko.containers import ServiceContainer
from nameko.messaging import QueueConsumer
from nameko.rpc import ReplyListener

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra.dead_letters import DeadLetterQueue
from services.infra.inbound import GuardedQueueConsumer, GuardedRpcConsumer
from services.infra.retry import ReliableEventHandler
from services.infra.settings import ConfigError, Settings
from services.infra.topology import SUBSCRIPTIONS, declarations, subscriber_queues
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService
from tests.conftest import signing_key_path
from tools import migrate_queues

SERVICES = (StudentsService, StatusService, CertificatesService, NotificationsService)
BASE = {
    "AMQP_URI": "memory://",
    "EVENT_RETRY_ATTEMPTS": 3,
    "EVENT_RETRY_BASE_DELAY": 1,
    "REQUEST_ID_SECRET": "unit-test-secret",
    "API_KEY_SECRET": "unit-test-secret",
    "CERTIFICATE_SIGNING_KEY": signing_key_path(),
}
QUORUM_ONLY = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def declared(service_cls: type, config: dict) -> dict[str, dict]:
    """Every queue a service's extensions declare: name → {kind, queue}."""
    found = {}
    container = ServiceContainer(service_cls, config)
    with patch.object(QueueConsumer, "register_provider"), patch("services.infra.retry.get_connection"):
        for extension in container.extensions:
            if isinstance(extension, GuardedRpcConsumer):
                extension.setup()
                found[extension.queue.name] = ("rpc", extension.queue)
            elif isinstance(extension, ReliableEventHandler):
                extension.setup()
                found[extension.queue.name] = ("handler", extension.queue)
                for queue in extension.delay_queues:
                    found[queue.name] = ("delay", queue)
                found[extension.parking.name] = ("dead letters", extension.parking)
            elif isinstance(extension, ReplyListener):
                extension.setup()
                found[extension.queue.name] = ("reply", extension.queue)
    return found


@pytest.mark.parametrize("service_cls", SERVICES)
def test_quorum_by_default(service_cls):
    queues = declared(service_cls, BASE)
    service = service_cls.name
    dead_letters = f"{service}.dead-letters"
    assert queues[f"rpc-{service}"][0] == "rpc"
    for name, (kind, queue) in queues.items():
        arguments = queue.queue_arguments or {}
        if kind == "reply":  # a caller's own: classic, expiring when unused
            assert "x-queue-type" not in arguments and arguments["x-expires"] > 0, name
            continue
        assert queue.durable and not queue.auto_delete and not queue.exclusive, name  # quorum refuses those
        assert arguments["x-queue-type"] == "quorum", name
        if kind in ("rpc", "handler"):
            assert arguments == {
                "x-queue-type": "quorum",
                "x-delivery-limit": 20,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_letters,
                **QUORUM_ONLY,
            }, name
        elif kind == "delay":
            handler = name.split(".retry.")[0]
            assert arguments == {
                "x-queue-type": "quorum",
                "x-message-ttl": int(name.split(".retry.")[1].removesuffix("ms")),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": handler,
                **QUORUM_ONLY,
            }, name
        else:  # listing takes and puts back: a delivery limit would drop them
            assert arguments == {"x-queue-type": "quorum"}, name


@pytest.mark.parametrize("service_cls", SERVICES)
def test_classic_is_what_was_declared_before(service_cls):
    for name, (kind, queue) in declared(service_cls, {**BASE, "QUEUE_TYPE": "classic"}).items():
        arguments = queue.queue_arguments or {}
        if kind == "delay":
            assert set(arguments) == {"x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key"}, name
        elif kind == "reply":
            assert set(arguments) == {"x-expires"}, name
        else:
            assert arguments == {}, name


def test_the_delivery_limit_is_configurable_and_at_least_one():
    queues = declared(StatusService, {**BASE, "QUEUE_DELIVERY_LIMIT": "3"})
    assert queues["rpc-status"][1].queue_arguments["x-delivery-limit"] == 3
    assert queues[SUBSCRIPTIONS[0].queue_name][1].queue_arguments["x-delivery-limit"] == 3
    with pytest.raises(ConfigError, match="QUEUE_DELIVERY_LIMIT must be at least 1"):
        Settings.from_config({"QUEUE_DELIVERY_LIMIT": 0})
    with pytest.raises(ConfigError, match="QUEUE_TYPE must be quorum or classic"):
        Settings.from_config({"QUEUE_TYPE": "stream"})


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_every_declaration_of_a_queue_is_the_same(queue_type):
    """A queue redeclared with other arguments fails with PRECONDITION_FAILED: the subscribers, the
    publishers (outbox relays, the gateway's dispatcher), the dead-letter tools and the migration
    tool all declare each queue alike."""
    config = {**BASE, "QUEUE_TYPE": queue_type}
    by_name: dict[str, list] = {}

    def seen(queue) -> None:
        by_name.setdefault(queue.name, []).append(
            (queue.queue_arguments or {}, queue.durable, queue.auto_delete, queue.exclusive)
        )

    for service_cls in SERVICES:
        for _, queue in declared(service_cls, config).values():
            seen(queue)
        seen(DeadLetterQueue("memory://", service_cls.name, Settings.from_config(config)).queue)  # the RPC tools
    for source in ("students", "status", "certificates", "gateway"):
        for entity in declarations(source, config)[1:]:
            seen(entity)
    gateway = ServiceContainer(GatewayService, config)
    for extension in gateway.extensions:
        if hasattr(extension, "declare") and hasattr(extension, "exchange"):  # its event dispatchers
            extension.setup()
            for entity in extension.declare:
                if entity is not extension.exchange:
                    seen(entity)
    for name, declarations_of in by_name.items():
        assert len(set(map(repr, declarations_of))) == 1, (name, declarations_of)
        if not name.startswith("rpc.reply-"):
            assert migrate_queues.arguments_for(name, config) == declarations_of[0][0], name
    assert "evt-gateway-status_change_requested--status.handle_status_change_requested" in by_name


def test_subscriber_queues_follow_the_type():
    for queue in subscriber_queues("status", {"QUEUE_TYPE": "classic"}):
        assert not queue.queue_arguments
    for queue in subscriber_queues("status", {}):
        service = queue.name.split("--")[1].split(".")[0]
        assert queue.queue_arguments["x-dead-letter-routing-key"] == f"{service}.dead-letters"


def test_prefetch_is_per_consumer():
    """Quorum queues refuse global QoS (NOT_IMPLEMENTED): nameko's consumers ask for prefetch with
    kombu's ``apply_global=False``, i.e. per consumer."""
    container = ServiceContainer(StudentsService, {**BASE, "max_workers": 7})
    consumer = next(e for e in container.extensions if isinstance(e, GuardedQueueConsumer))
    rpc_consumer = next(e for e in container.extensions if isinstance(e, GuardedRpcConsumer))
    with patch.object(QueueConsumer, "register_provider"):
        rpc_consumer.setup()
    consumer._providers = {rpc_consumer}
    channel = Mock()
    consumer.get_consumers(partial(Consumer, channel, auto_declare=False), channel)
    channel.basic_qos.assert_called_once_with(0, 7, False)
