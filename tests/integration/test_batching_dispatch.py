"""The gateway's BatchingEventDispatcher on a real broker: concurrent dispatches
travel together, each caller returns once its message is confirmed, and a
failed publish reaches every caller of the batch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import eventlet
import pytest
from kombu import Connection, Queue
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import entrypoint_hook

from gateway.dependencies import BatchingEventDispatcher
from services.exceptions import ServiceUnavailable
from services.infra.topology import subscriber_queues

CALLS = 40


class Gateway:
    name = "gateway"  # publishes what the real gateway does, into the queue it declares
    dispatch = BatchingEventDispatcher(batch_key="requests")

    @rpc
    def send(self, n: int) -> int:
        self.dispatch("status_change_requested", {"n": n})
        return n


def drain(amqp_uri: str, queue: Queue) -> list[dict]:
    """Every message in ``queue`` (declared as the gateway declares it) now: a confirmed message
    is already queued, so ``basic_get`` until empty finds them all, with no quiet period to guess."""
    bodies = []
    with Connection(amqp_uri) as connection:
        simple = connection.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                bodies.append(json.loads(simple.get_nowait().body))
        except simple.Empty:
            return bodies
        finally:
            simple.close()


def send_concurrently(config: dict, count: int) -> list:
    """``count`` RPC calls in flight at once, each served by its own worker."""
    with ClusterRpcProxy(config, timeout=15) as proxy:
        calls = [proxy.gateway.send.call_async(n) for n in range(count)]
        results = []
        for call in calls:
            try:
                results.append(call.result())
            except ServiceUnavailable as exc:
                results.append(exc)
        return results


def test_concurrent_dispatches_share_messages_and_none_is_lost(rabbit_config, container_factory):
    container = container_factory(Gateway, rabbit_config)
    container.start()
    [queue] = subscriber_queues("gateway", rabbit_config)

    assert send_concurrently(rabbit_config, CALLS) == list(range(CALLS))  # every caller returned after its confirm

    messages = drain(rabbit_config["AMQP_URI"], queue)
    items = [item["n"] for message in messages for item in message["requests"]]
    assert sorted(items) == list(range(CALLS))  # each exactly once
    assert len(messages) < CALLS  # some travelled together
    with entrypoint_hook(container, "send") as send:
        send(99)  # alone: one message with one item, at once
    assert drain(rabbit_config["AMQP_URI"], queue) == [{"requests": [{"n": 99}]}]


def test_a_deleted_queue_is_declared_again_before_the_next_publish(rabbit_config, container_factory):
    container = container_factory(Gateway, rabbit_config)
    container.start()
    [queue] = subscriber_queues("gateway", rabbit_config)
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        connection.default_channel.queue_delete(queue.name)

    assert send_concurrently(rabbit_config, 12) == list(range(12))
    assert sorted(i["n"] for m in drain(rabbit_config["AMQP_URI"], queue) for i in m["requests"]) == list(range(12))


def test_a_failed_publish_fails_every_caller_of_its_batch_and_only_them():
    """No broker: the publisher is replaced by one that fails its second publish."""
    dispatcher = BatchingEventDispatcher(batch_key="requests")
    dispatcher.exchange, dispatcher.waiting, dispatcher.flushing = SimpleNamespace(name="gateway.events"), {}, set()
    published = []

    def publish(body, **_):
        published.append(body)
        eventlet.sleep(0.01)  # awaiting the confirm: later callers queue up meanwhile
        if len(published) == 2:
            raise OSError("connection reset by peer")

    dispatcher.publisher = SimpleNamespace(publish=publish)
    dispatch = dispatcher.get_dependency(SimpleNamespace(context_data={"correlation_id": "c-1"}))

    def call(n: int):
        try:
            dispatch("status_change_requested", {"n": n})
            return "ok"
        except ServiceUnavailable as exc:
            return exc.code

    first = eventlet.spawn(call, 0)
    eventlet.sleep(0)  # the first message is on its way
    rest = [eventlet.spawn(call, n) for n in range(1, 6)]
    assert [first.wait(), *(t.wait() for t in rest)] == ["ok"] + ["SERVICE_UNAVAILABLE"] * 5
    assert published == [{"requests": [{"n": 0}]}, {"requests": [{"n": n} for n in range(1, 6)]}]
    assert call(6) == "ok" and published[-1] == {"requests": [{"n": 6}]}  # the next batch goes again


def test_the_payloads_of_one_call_travel_in_one_message_in_order():
    """No broker: a call's payloads are never split between messages, even past ``max_batch``."""
    dispatcher = BatchingEventDispatcher(batch_key="requests", max_batch=3)
    dispatcher.exchange, dispatcher.waiting, dispatcher.flushing = SimpleNamespace(name="gateway.events"), {}, set()
    published = []

    def publish(body, **_):
        published.append([item["n"] for item in body["requests"]])
        eventlet.sleep(0.01)  # awaiting the confirm: later callers queue up meanwhile

    dispatcher.publisher = SimpleNamespace(publish=publish)
    dispatch = dispatcher.get_dependency(SimpleNamespace(context_data={}))
    calls = [(0,), (1,), (2, 3, 4, 5), (6,), (7, 8), (9,)]
    first = eventlet.spawn(dispatch, "status_change_requested", {"n": 0})
    eventlet.sleep(0)  # the first message is on its way
    rest = [eventlet.spawn(dispatch, "status_change_requested", *({"n": n} for n in call)) for call in calls[1:]]
    for thread in [first, *rest]:
        thread.wait()
    assert published == [[0], [1], [2, 3, 4, 5], [6, 7, 8], [9]]


def test_a_batch_carries_the_context_headers_of_its_first_caller():
    """No broker: each caller's payload keeps its own correlation id; the message has the first's."""
    dispatcher = BatchingEventDispatcher(batch_key="requests")
    dispatcher.exchange, dispatcher.waiting, dispatcher.flushing = SimpleNamespace(name="gateway.events"), {}, set()
    published = []

    def publish(body, extra_headers, **_):
        published.append(
            (extra_headers["nameko.correlation_id"], [item["correlation_id"] for item in body["requests"]])
        )
        eventlet.sleep(0.01)  # awaiting the confirm: later callers queue up meanwhile

    dispatcher.publisher = SimpleNamespace(publish=publish)

    def call(n: int) -> None:
        worker_ctx = SimpleNamespace(context_data={"correlation_id": f"c-{n}"})
        dispatcher.get_dependency(worker_ctx)("status_change_requested", {"correlation_id": f"c-{n}"})

    first = eventlet.spawn(call, 0)
    eventlet.sleep(0)  # the first message is on its way
    for thread in [first, *(eventlet.spawn(call, n) for n in range(1, 4))]:
        thread.wait()
    assert published == [("c-0", ["c-0"]), ("c-1", ["c-1", "c-2", "c-3"])]


@pytest.fixture
def rabbit_config(rabbit_config):
    return {**rabbit_config, "max_workers": 20}
