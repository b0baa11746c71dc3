"""A service stopped while its queue consumer is still starting stops cleanly.

The autoscaling launcher may SIGTERM an instance it has just added; every provider of that
instance's consumer (an RPC entrypoint and event handlers) then unregisters before the
consumer is ready.
"""

from __future__ import annotations

import eventlet
import pytest
from nameko.containers import ServiceContainer
from nameko.exceptions import deserialize
from nameko.messaging import QueueConsumer

from gateway.student_reads import ReadCopyConsumer
from services.exceptions import ServiceUnavailable
from services.infra.background import BackgroundLoop
from services.infra.batching import BatchingQueueConsumer
from services.infra.inbound import GuardedQueueConsumer, StoppableQueueConsumer
from services.infra.rpc import TimedServiceProxy


def unregister_all_while_starting(consumer: QueueConsumer, providers: list[object]) -> None:
    for provider in providers:
        consumer.register_provider(provider)
    assert not consumer._consumers_ready.ready()  # the consumer has not started consuming
    for provider in providers:
        consumer.unregister_provider(provider)
    with eventlet.Timeout(5):
        consumer.wait_for_providers()  # what the container's stop waits for


@pytest.mark.parametrize("cls", [StoppableQueueConsumer, GuardedQueueConsumer, BatchingQueueConsumer, ReadCopyConsumer])
def test_every_provider_unregisters_before_the_consumer_is_ready(cls):
    unregister_all_while_starting(cls(), [object(), object(), object()])


def test_nameko_consumer_alone_fails_the_second_provider():
    """Why the subclass exists: the same steps on nameko 2.14.1's own consumer."""
    with pytest.raises(AssertionError, match="re-send"):
        unregister_all_while_starting(QueueConsumer(), [object(), object()])


@pytest.mark.parametrize("cls", [StoppableQueueConsumer, GuardedQueueConsumer, BatchingQueueConsumer, ReadCopyConsumer])
def test_a_consumer_stopped_before_its_start_ran_stops_and_never_starts(cls):
    """A SIGTERM while a service starts may reach the consumer before its ``start()`` did
    (nameko's own ``stop`` fails there: its consumer thread does not exist yet)."""
    consumer = cls()
    with eventlet.Timeout(5):
        consumer.stop()
        consumer.start()  # the container's start, coming late: does nothing
    assert getattr(consumer, "_gt", None) is None and consumer._consumers_ready.ready()


class Idle(BackgroundLoop):
    def step(self) -> bool:
        return False


class WithALoop:
    name = "with_a_loop"
    loop = Idle()


def test_a_service_stopped_before_its_loop_began_stops_cleanly():
    """nameko stops every dependency of a container stopped while starting, begun or not."""
    container = ServiceContainer(WithALoop, {"AMQP_URI": "memory://"})
    with eventlet.Timeout(5):
        container.stop()
    assert container._died.ready()
    assert Idle().end(grace=0.1) is True


def test_a_stopping_instance_is_unavailable_not_a_crash():
    """A stopping instance answers every call with MethodNotFound (its RPC entrypoints have
    unregistered): the caller hears the service is unavailable, as for any absent service."""

    class Stopping:
        def count_dead_letters(self):
            reply = {"exc_path": "nameko.exceptions.MethodNotFound", "exc_args": ["count_dead_letters"]}
            raise deserialize(reply)  # what nameko's proxy raises for that reply

    with pytest.raises(ServiceUnavailable, match="status service is stopping"):
        TimedServiceProxy(Stopping(), "status", 1.0).count_dead_letters()
