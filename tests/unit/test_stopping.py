"""A service stopped while its queue consumer is still starting stops cleanly.

The autoscaling launcher may SIGTERM an instance it has just added; every provider of that
instance's consumer (an RPC entrypoint and event handlers) then unregisters before the
consumer is ready.
"""

from __future__ import annotations

import eventlet
import pytest
from nameko.messaging import QueueConsumer

from gateway.student_reads import ReadCopyConsumer
from services.infra.batching import BatchingQueueConsumer
from services.infra.inbound import GuardedQueueConsumer, StoppableQueueConsumer


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
