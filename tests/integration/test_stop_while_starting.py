"""A service stopped while its queue consumer is still starting (a SIGTERM just after the
autoscaling launcher added an instance) stops: not killed, nothing logged as a crash.

Real broker. The consumer's start is held (its ``get_consumers``, where kombu declares the
queues, waits on a gate the test opens never) so the stop comes at a known moment: after the
container started its extensions, before the consumer is ready. Two handlers share the
consumer, as a service's do."""

from __future__ import annotations

import logging

import eventlet
from eventlet.event import Event

from services.infra.inbound import GuardedQueueConsumer
from services.infra.retry import ReliableEventHandler
from tests.conftest import make_db_uris, service_config

GATE = Event()
HELD = Event()


class HeldConsumer(GuardedQueueConsumer):
    def get_consumers(self, consumer_cls, channel):
        if not HELD.ready():
            HELD.send(None)
        GATE.wait()  # never opened: the consumer stays "starting"
        return super().get_consumers(consumer_cls, channel)


class HeldHandler(ReliableEventHandler):
    queue_consumer = HeldConsumer()


class TwoHandlers:
    name = "starting"

    @HeldHandler.decorator("students", "student_created")
    def one(self, payload):
        pass

    @HeldHandler.decorator("students", "student_deleted")
    def two(self, payload):
        pass


def test_a_service_stopped_while_its_consumer_starts_stops_cleanly(
    container_factory, rabbit_config, tmp_path, request, caplog
):
    config = service_config(rabbit_config["AMQP_URI"], make_db_uris("sqlite", tmp_path, request))
    container = container_factory(TwoHandlers, config)
    starting = eventlet.spawn(container.start)
    with eventlet.Timeout(30):
        HELD.wait()  # the consumer thread is declaring its queues: not ready
    consumer = next(e for e in container.subextensions if isinstance(e, HeldConsumer))
    assert not consumer._consumers_ready.ready()

    with caplog.at_level(logging.DEBUG), eventlet.Timeout(30):
        container.stop()
        container.wait()  # raises what the container died of, had it been killed
        starting.wait()

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "re-send" not in caplog.text
