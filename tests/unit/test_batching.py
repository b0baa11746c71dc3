"""What a batched handler's deliveries carry: each item keeps its own correlation id, else takes its message's."""

from __future__ import annotations

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
    def __init__(self):
        self.connection = object()
        self.acks: list[tuple[int, bool]] = []
        self.requeued: list[int] = []
        self.no_ack_consumers = None

    def basic_ack(self, tag, multiple=False):
        self.acks.append((tag, multiple))

    def basic_reject(self, tag, requeue=False):
        self.requeued.append(tag)


def deliveries(channel, tags):
    return {tag: Message(body=b"{}", channel=channel, delivery_tag=tag) for tag in tags}


def consumer_with(channel, tags):
    consumer = BatchingQueueConsumer()
    messages = deliveries(channel, tags)
    for message in messages.values():
        consumer.delivered(message)
    return consumer, messages


def test_a_batch_that_is_every_delivery_up_to_its_last_is_acked_with_one_multiple_ack():
    channel = Channel()
    consumer, messages = consumer_with(channel, range(1, 11))
    consumer.ack_batch([messages[tag] for tag in range(1, 6)])
    assert channel.acks == [(5, True)]
    consumer.ack_batch([messages[tag] for tag in range(6, 11)])
    assert channel.acks == [(5, True), (10, True)]


def test_a_delivery_before_the_batch_still_unacked_makes_it_ack_one_by_one():
    """E.g. a refused message still being parked, or another handler's on the same channel:
    a multiple-ack would take it too."""
    channel = Channel()
    consumer, messages = consumer_with(channel, range(1, 8))
    consumer.ack_batch([messages[tag] for tag in (2, 3, 4)])  # 1 is still out
    assert channel.acks == [(2, False), (3, False), (4, False)]
    consumer.ack_message(messages[1])  # once it is settled ...
    consumer.requeue_message(messages[5])
    consumer.ack_batch([messages[6], messages[7]])  # ... and 5 was requeued: up to 7, only the batch is out
    assert channel.acks[-2:] == [(1, False), (7, True)] and channel.requeued == [5]


def test_after_a_reconnection_the_old_channel_s_deliveries_do_not_count():
    old, new = Channel(), Channel()
    consumer, stale = consumer_with(old, [1, 2, 3])
    fresh = deliveries(new, [1, 2])
    for message in fresh.values():
        consumer.delivered(message)
    consumer.ack_batch(list(fresh.values()))
    assert new.acks == [(2, True)] and old.acks == []
    consumer.ack_batch([stale[1], stale[2]])  # the old channel's: one by one (nameko ignores a dead one)
    assert old.acks == [(1, False), (2, False)]
