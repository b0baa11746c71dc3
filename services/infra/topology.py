"""One shared description of who subscribes to which event, and of the queues consumed.

RabbitMQ drops events published to an exchange with no bound queue, so every
publisher (the services' outbox relays, the gateway) declares the durable
subscriber queues below before its first publish; the subscribers' own
``@event_handler`` declarations are identical, so whichever side starts first
creates them and events wait in them while a consumer is down.
"""

from __future__ import annotations

from typing import NamedTuple

from kombu import Queue
from nameko.rpc import RPC_QUEUE_TEMPLATE, get_rpc_exchange
from nameko.standalone.events import get_event_exchange

from services.infra.parking import dead_letter_name
from services.infra.queues import consumed_arguments
from services.infra.settings import Settings


class Subscription(NamedTuple):
    source: str
    event_type: str
    service: str
    handler: str

    @property
    def queue_name(self) -> str:
        # nameko's SERVICE_POOL naming (nameko/events.py, EventHandler.setup)
        return f"evt-{self.source}-{self.event_type}--{self.service}.{self.handler}"


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("gateway", "status_change_requested", "status", "handle_status_change_requested"),
    Subscription("students", "student_created", "status", "handle_student_created"),
    Subscription("students", "student_deleted", "status", "handle_student_deleted"),
    Subscription("status", "student_status_changed", "students", "handle_student_status_changed"),
    Subscription("status", "student_status_changed", "certificates", "handle_student_status_changed"),
    Subscription("status", "student_status_changed", "notifications", "handle_student_status_changed"),
    Subscription("certificates", "certificate_issued", "notifications", "handle_certificate_issued"),
)

# every process of a service hears these (nameko's BROADCAST): a queue of each process's own, named
# ``<queue_name>-<an id the process makes>``, exclusive and deleted when its connection goes, so
# nothing waits for a process that is gone and nothing of it is declared by publishers
FOLLOWS: tuple[Subscription, ...] = (
    Subscription("students", "student_created", "gateway", "handle_student_created"),
    Subscription("students", "student_updated", "gateway", "handle_student_updated"),
    Subscription("students", "student_deleted", "gateway", "handle_student_deleted"),
    Subscription("status", "student_status_changed", "gateway", "handle_student_status_changed"),
)


def handler_queue(queue: Queue, service: str, config: dict) -> Queue:
    """An event handler's queue as nameko names and binds it, declared with ``QUEUE_TYPE``'s
    arguments (poison messages go to ``service``'s dead letters)."""
    arguments = consumed_arguments(Settings.from_config(config), dead_letter_name(service))
    return Queue(
        queue.name,
        exchange=queue.exchange,
        routing_key=queue.routing_key,
        durable=True,
        auto_delete=False,
        exclusive=False,
        queue_arguments=arguments,
    )


def subscriber_queues(source: str, config: dict) -> list[Queue]:
    """The durable queues bound to ``source``'s events, as their handlers declare them."""
    exchange = get_event_exchange(source, config)
    return [
        handler_queue(Queue(sub.queue_name, exchange=exchange, routing_key=sub.event_type), sub.service, config)
        for sub in SUBSCRIPTIONS
        if sub.source == source
    ]


def rpc_queue(service: str, config: dict) -> Queue:
    """``rpc-<service>``, bound to nameko's RPC exchange as nameko's ``RpcConsumer`` binds it,
    declared with ``QUEUE_TYPE``'s arguments (poison requests go to the service's dead letters)."""
    return Queue(
        RPC_QUEUE_TEMPLATE.format(service),
        exchange=get_rpc_exchange(config),
        routing_key=f"{service}.*",
        durable=True,
        queue_arguments=consumed_arguments(Settings.from_config(config), dead_letter_name(service)),
    )


def declarations(source: str, config: dict) -> list:
    """Everything a publisher of ``source`` events declares before publishing."""
    return [get_event_exchange(source, config), *subscriber_queues(source, config)]
