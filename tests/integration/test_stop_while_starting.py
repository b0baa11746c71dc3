"""A service stopped while its queue consumer is still starting (a SIGTERM just after the
autoscaling launcher added an instance) stops: not killed, nothing logged as a crash.

Real broker. The consumer's start is held (its ``get_consumers``, where kombu declares the
queues, waits on a gate the test opens never) so the stop comes at a known moment: after the
container started its extensions, before the consumer is ready. Two handlers share the
consumer, as a service's do.

And a consumer thread that gives no sign of life for its liveness timeout is taken for stuck (the
real reaction ends the process for its supervisor to start again; here it is recorded), while an
idle one, which looks in every second, is left alone."""

from __future__ import annotations

import logging

import eventlet
import pytest
from eventlet.event import Event
from nameko.extensions import DependencyProvider
from nameko.web.server import WebServer

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra.inbound import GuardedQueueConsumer, StoppableQueueConsumer
from services.infra.retry import ReliableEventHandler
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService
from tests.conftest import make_db_uris, service_config

GATE = Event()
HELD = Event()


def consuming_with(consumer: GuardedQueueConsumer, name: str, *event_types: str) -> type:
    """A service named ``name`` with a handler of each students event in ``event_types``, every
    one consuming through ``consumer``."""

    class Handler(ReliableEventHandler):
        queue_consumer = consumer

    def handler(self, payload):
        pass

    methods = {f"handle_{event}": Handler.decorator("students", event)(handler) for event in event_types}
    return type(f"{name.title()}Service", (), {"name": name, **methods})


def config_for(rabbit_config, tmp_path, request) -> dict:
    return service_config(rabbit_config["AMQP_URI"], make_db_uris("sqlite", tmp_path, request))


class HeldConsumer(GuardedQueueConsumer):
    def get_consumers(self, consumer_cls, channel):
        if not HELD.ready():
            HELD.send(None)
        GATE.wait()  # never opened: the consumer stays "starting"
        return super().get_consumers(consumer_cls, channel)


TwoHandlers = consuming_with(HeldConsumer(), "starting", "student_created", "student_deleted")


def test_a_service_stopped_while_its_consumer_starts_stops_cleanly(
    container_factory, rabbit_config, tmp_path, request, caplog
):
    container = container_factory(TwoHandlers, config_for(rabbit_config, tmp_path, request))
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


STUCK_GATE = Event()
STALLED: list[float] = []


class StuckConsumer(GuardedQueueConsumer):
    """A consumer thread that never comes back (its declare never answered), watched closely."""

    liveness_timeout = 0.5

    def get_consumers(self, consumer_cls, channel):
        STUCK_GATE.wait()
        return super().get_consumers(consumer_cls, channel)

    def stalled(self, silent: float) -> None:  # the real one ends the process
        STALLED.append(silent)


StuckService = consuming_with(StuckConsumer(), "stuck", "student_created")


def test_a_consumer_that_gives_no_sign_of_life_is_taken_for_stuck(container_factory, rabbit_config, tmp_path, request):
    container = container_factory(StuckService, config_for(rabbit_config, tmp_path, request))
    eventlet.spawn(container.start)
    try:
        with eventlet.Timeout(30):
            while not STALLED:
                eventlet.sleep(0.1)
        assert STALLED[0] > StuckConsumer.liveness_timeout
    finally:
        STUCK_GATE.send(None)  # let the thread go, so the container can be stopped ...
        consumer = next(e for e in container.subextensions if isinstance(e, StuckConsumer))
        with eventlet.Timeout(30):
            # ... once it has declared its queue: a quorum queue declared while the test's vhost is
            # being deleted makes RabbitMQ 3.10's dead-letter workers fail until their supervisor
            # gives up, and then no queue that dead-letters at least once can be declared on the
            # broker until it is restarted (seen: every later test's services failed to start)
            consumer._consumers_ready.wait()


def test_a_consumer_that_waits_for_messages_is_alive(container_factory, rabbit_config, tmp_path, request):
    """Idle for several times its timeout: its thread looks in every second, so it is left alone."""

    class Watched(GuardedQueueConsumer):
        liveness_timeout = 2.5  # more than twice the second between its looks, on a busy machine too

        def stalled(self, silent: float) -> None:
            STALLED.append(-silent)

    idle = consuming_with(Watched(), "idle", "student_created")
    container_factory(idle, config_for(rabbit_config, tmp_path, request)).start()
    before = list(STALLED)
    eventlet.sleep(6)
    assert before == STALLED


# --- every service of the system, stopped at each moment of its start -------------------------

SERVICES = [StudentsService, StatusService, NotificationsService, CertificatesService, GatewayService]


def never_consumed(container) -> bool:
    """Nothing of ``container`` started: no queue consumer thread, no listening socket."""
    consumers = [e for e in container.subextensions if isinstance(e, StoppableQueueConsumer)]
    servers = [e for e in container.subextensions if isinstance(e, WebServer)]
    return all(getattr(e, "_gt", None) is None for e in consumers + servers)


@pytest.mark.parametrize("service", SERVICES, ids=lambda cls: cls.name)
def test_a_service_stopped_before_its_start_began_never_starts(
    service, container_factory, rabbit_config, tmp_path, request, caplog
):
    """The stop nameko run spawns for a SIGTERM may run before the container's start does."""
    container = container_factory(service, config_for(rabbit_config, tmp_path, request))
    with caplog.at_level(logging.INFO), eventlet.Timeout(30):
        container.stop()
        container.wait()
        container.start()  # comes late: does nothing

    assert never_consumed(container)
    assert not container.set_up.ready(), "no extension was set up"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "stopped before it started" in caplog.text


class SlowSetup(DependencyProvider):
    """An extension whose setup waits for the test: the container is caught setting up."""

    def setup(self) -> None:
        SETTING_UP.send(None)
        SETUP_GATE.wait()


SETTING_UP, SETUP_GATE = Event(), Event()


@pytest.mark.parametrize("service", SERVICES, ids=lambda cls: cls.name)
def test_a_service_stopped_while_setting_up_stops_once_set_up_and_never_starts(
    service, container_factory, rabbit_config, tmp_path, request, caplog
):
    global SETTING_UP, SETUP_GATE
    SETTING_UP, SETUP_GATE = Event(), Event()
    held = type(service.__name__, (service,), {"held_setup": SlowSetup()})
    container = container_factory(held, config_for(rabbit_config, tmp_path, request))

    with caplog.at_level(logging.INFO), eventlet.Timeout(30):
        starting = eventlet.spawn(container.start)
        SETTING_UP.wait()  # every other extension set up (or setting up): none started
        stopping = eventlet.spawn(container.stop)
        eventlet.sleep(0.2)
        assert not stopping.dead, "the stop waits for the setup to end"
        SETUP_GATE.send(None)
        starting.wait()
        stopping.wait()
        container.wait()  # raises what the container died of, had it been killed

    assert never_consumed(container)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
