"""The shared topology and the services' handlers describe the same queues."""

from __future__ import annotations

from nameko.events import BROADCAST, EventHandler

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra.topology import FOLLOWS, SUBSCRIPTIONS, Subscription, subscriber_queues
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService

SERVICES = (StudentsService, StatusService, CertificatesService, NotificationsService)


def declared_handlers(services: tuple[type, ...] = SERVICES) -> set[Subscription]:
    found = set()
    for service in services:
        for name in dir(service):
            for entrypoint in getattr(getattr(service, name), "nameko_entrypoints", ()):
                if isinstance(entrypoint, EventHandler):
                    found.add(Subscription(entrypoint.source_service, entrypoint.event_type, service.name, name))
    return found


def test_every_handler_is_in_the_topology_and_nothing_else():
    assert declared_handlers() == set(SUBSCRIPTIONS)


def test_every_event_the_gateway_follows_is_in_the_topology_and_nothing_else():
    assert declared_handlers((GatewayService,)) == set(FOLLOWS)
    for name in dir(GatewayService):
        for entrypoint in getattr(getattr(GatewayService, name), "nameko_entrypoints", ()):
            if isinstance(entrypoint, EventHandler):
                assert entrypoint.handler_type == BROADCAST and not entrypoint.reliable_delivery, name


def test_queues_match_nameko_declarations():
    queues = {q.name: q for q in subscriber_queues("status", {})}
    queue = queues["evt-status-student_status_changed--students.handle_student_status_changed"]
    assert queue.durable and not queue.auto_delete and not queue.exclusive
    assert queue.exchange.name == "status.events" and queue.routing_key == "student_status_changed"
    assert queue.queue_arguments["x-queue-type"] == "quorum"
    assert queue.queue_arguments["x-dead-letter-routing-key"] == "students.dead-letters"
    assert {q.name for q in subscriber_queues("gateway", {})} == {
        "evt-gateway-status_change_requested--status.handle_status_change_requested"
    }
