"""What a batched handler's deliveries carry: each item keeps its own correlation id, else takes its message's."""

from __future__ import annotations

import pytest
from kombu.message import Message

from services.infra.batching import BatchingQueueConsumer, Delivery


def test_items_take_their_own_messages_correlation_id_where_they_have_none():
    traceparent = f"00-{'1' * 32}-{'2' * 16}-01"
    delivery = Delivery({"requests": []}, {"correlation_id": "message-2", "traceparent": traceparent})
    items = [{"student_id": 1, "correlation_id": "own"}, {"student_id": 2}, {"student_id": 3, "correlation_id": None}]

    stamped = delivery.stamped(items)

    assert [item["correlation_id"] for item in stamped] == ["own", "message-2", "message-2"]
    assert all("traceparent" not in item for item in stamped), "traces off: no traceparent is copied"
    assert items[1] == {"student_id": 2}, "the payload itself is left as it came"


class Channel:
    """What the consumer needs of an AMQP channel: its acks, recorded."""

    def __init__(self, connection: object = "open"):
        self.connection, self.no_ack_consumers, self.acks = connection, None, []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))

    def basic_reject(self, delivery_tag: int, requeue: bool) -> None:
        self.acks.append((delivery_tag, "requeued" if requeue else "rejected"))


def delivered(consumer: BatchingQueueConsumer, channel: Channel, *tags: int) -> list[Message]:
    messages = [Message(body=b"{}", delivery_tag=tag, channel=channel) for tag in tags]
    for message in messages:
        consumer._received(message)
    return messages


@pytest.fixture
def consumer() -> BatchingQueueConsumer:
    consumer = BatchingQueueConsumer()
    consumer.unsettled = {}
    return consumer


def test_a_batch_is_acked_with_one_multiple_ack(consumer):
    channel = Channel()
    first, second = delivered(consumer, channel, 1, 2, 3), delivered(consumer, channel, 4, 5)

    consumer.ack_messages(first)
    consumer.ack_messages(second)

    assert channel.acks == [(3, True), (5, True)]
    assert all(message.acknowledged for message in first + second)
    assert consumer.unsettled[channel] == set()


def test_an_older_unsettled_delivery_keeps_a_batch_to_acks_of_its_own(consumer):
    channel = Channel()
    malformed, *batch = delivered(consumer, channel, 1, 2, 3)  # 1 is being parked while 2 and 3 apply

    consumer.ack_messages(batch)
    consumer.ack_message(malformed)  # parked: acked on its own, once
    later = delivered(consumer, channel, 4, 5)
    consumer.ack_messages(later)

    assert channel.acks == [(2, False), (3, False), (1, False), (5, True)]


def test_a_requeued_delivery_no_longer_holds_a_batch_back(consumer):
    channel = Channel()
    failed, *batch = delivered(consumer, channel, 1, 2, 3)
    consumer.requeue_message(failed)  # the broker could not take its retry: it goes back to the queue
    consumer.ack_messages(batch)
    assert channel.acks == [(1, "requeued"), (3, True)]


def test_deliveries_of_a_lost_connection_are_left_to_the_broker(consumer):
    lost = Channel()
    waiting = delivered(consumer, lost, 1, 2)
    lost.connection = None  # the connection dropped: the broker has taken 1 and 2 back
    again = Channel()
    redelivered = delivered(consumer, again, 1, 2, 3)

    consumer.ack_messages(waiting + redelivered)

    assert lost.acks == [] and again.acks == [(3, True)]
    assert list(consumer.unsettled) == [again], "the lost channel's tags are forgotten"
