"""The status service takes ``status_change_requested`` messages in batches (one transaction, acks
after its commit) on a real broker: a crash on either side of the commit loses nothing and applies
nothing twice; a poison message in a batch ends retried and parked alone while its batch-mates are
applied; and every student's requests are applied in the order they were sent.

Deterministic: the first batch is held inside the handler (``submit_many`` patched to wait on an
event) while the rest are published, so they all gather into the next batch."""

from __future__ import annotations

import logging
import uuid
from unittest.mock import patch

import pytest
from eventlet.event import Event
from nameko.amqp.publish import Publisher
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services._status import repo
from services._status.models import StatusHistory, StatusRequest
from services.infra import correlation, logs
from services.infra.batching import BatchingEventHandler
from services.infra.db import build_engine
from services.infra.inbound import GuardedQueueConsumer
from services.status import StatusService
from tests.integration.conftest import wait_for
from tests.unit.test_services import track

submit_many = repo.submit_many  # the real one, called by the patched versions


@pytest.fixture
def status_db(config):
    engine = build_engine(config["DB_URIS"]["status:StatusBase"])
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


class HeldBatches:
    """``repo.submit_many`` recording what each call got; the first call is held on ``release``
    (before or after its real transaction), and calls with a request in ``poison`` fail."""

    def __init__(self, hold: str | None = None, poison: frozenset[str] = frozenset()):
        self.hold, self.poison = hold, poison
        self.calls: list[list[str]] = []
        self.held, self.release = Event(), Event()

    def __call__(self, session_factory, commands: list[dict]) -> None:
        self.calls.append([str(c["request_id"]) for c in commands])
        first = len(self.calls) == 1 and self.hold is not None
        if first and self.hold == "before commit":
            self.held.send(None)
            self.release.wait()
        if self.poison.intersection(self.calls[-1]):
            raise RuntimeError("poison")
        submit_many(session_factory, commands)
        if first and self.hold == "after commit":
            self.held.send(None)
            self.release.wait()


def request(student_id: int, status: str) -> dict:
    return {"request_id": str(uuid.uuid4()), "student_id": student_id, "status": status, "actor": "test"}


def publish(config: dict, payloads: list[dict]) -> None:
    dispatch = event_dispatcher(config)
    for payload in payloads:
        dispatch("gateway", "status_change_requested", payload)


def applied(status_db) -> list[tuple[str, int, str]]:
    """``(request_id, student_id, to_status)`` of every history row, in the order applied."""
    with status_db() as session:
        rows = session.execute(
            select(StatusHistory.request_id, StatusHistory.student_id, StatusHistory.to_status).order_by(
                StatusHistory.id
            )
        )
        return [tuple(row) for row in rows]


def recorded(status_db) -> int:
    with status_db() as session:
        return session.scalar(select(func.count()).select_from(StatusRequest))


@pytest.mark.parametrize("crash", ["before commit", "after commit"])
def test_a_batch_is_acked_after_its_commit_and_a_crash_applies_it_once(crash, config, container_factory, status_db):
    track(status_db, *range(1, 31))
    sent = [request(student, "active") for student in range(1, 31)]
    held = HeldBatches(hold=crash)
    with patch.object(repo, "submit_many", held):
        first = container_factory(StatusService, config)
        first.start()
        publish(config, sent[:1])
        held.held.wait()  # the first batch is in the handler
        publish(config, sent[1:])  # delivered meanwhile (prefetch), waiting for the next batch
        assert recorded(status_db) == (1 if crash == "after commit" else 0)
        first.kill()  # a crash: nothing of the batch was acked, nothing after it was handled

    again = HeldBatches()
    with patch.object(repo, "submit_many", again):
        container_factory(StatusService, config).start()
        wait_for(lambda: len(applied(status_db)) == len(sent), timeout=30)
    redelivered = {request_id for call in again.calls for request_id in call}
    assert sent[0]["request_id"] in redelivered, "the first batch came again: it had not been acked"
    assert sorted(applied(status_db)) == sorted((r["request_id"], r["student_id"], "active") for r in sent)
    assert recorded(status_db) == len(sent)  # each once


def test_a_poison_message_is_retried_and_parked_alone_while_its_batch_mates_apply_in_order(
    config, container_factory, status_db
):
    track(status_db, 1, 2, 3)
    opening = request(3, "active")
    mates = [request(1 + n % 2, "active" if n % 4 < 2 else "suspended") for n in range(40)]
    poison = request(3, "suspended")
    batch = [*mates[:20], poison, *mates[20:]]
    held = HeldBatches(hold="after commit", poison=frozenset({poison["request_id"]}))
    with patch.object(repo, "submit_many", held):
        container = container_factory(StatusService, config)
        container.start()
        publish(config, [opening])
        held.held.wait()
        publish(config, batch)
        [handler] = [e for e in container.entrypoints if isinstance(e, BatchingEventHandler)]
        wait_for(lambda: len(handler.waiting) == len(batch))  # all delivered while the first batch is held
        held.release.send(None)
        with ClusterRpcProxy(config, timeout=10) as rpc:
            [letter] = wait_for(rpc.status.list_dead_letters)
        wait_for(lambda: len(applied(status_db)) == 1 + len(mates))

    assert held.calls[1] == [r["request_id"] for r in batch], "the rest travelled as one batch"
    assert letter["payload"] == poison and letter["handler"] == "status.handle_status_change_requested"
    assert letter["attempts"] == config["EVENT_RETRY_ATTEMPTS"] and "RuntimeError: poison" in letter["error"]
    history = applied(status_db)
    for student in (1, 2):  # every student's requests applied, in the order they were sent
        sent = [(r["request_id"], student, r["status"]) for r in mates if r["student_id"] == student]
        assert [row for row in history if row[1] == student] == sent
    assert [row for row in history if row[1] == 3] == [(opening["request_id"], 3, "active")]


def test_every_message_of_a_batch_is_logged_under_its_own_correlation_id(config, container_factory, status_db):
    track(status_db, 1)
    held = HeldBatches(hold="after commit")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    handler.addFilter(logs.Context())
    logs.worker_log.addHandler(handler)
    level, _ = logs.worker_log.level, logs.worker_log.setLevel(logging.INFO)  # as config.yaml logs it
    try:
        with patch.object(repo, "submit_many", held):
            container = container_factory(StatusService, config)
            container.start()
            publish(config, [request(1, "active")])
            held.held.wait()
            ids = [f"batch-mate-{n}-{uuid.uuid4().hex[:8]}" for n in range(5)]
            for n, correlation_id in enumerate(ids):
                event_dispatcher(config, headers={correlation.HEADER: correlation_id})(
                    "gateway", "status_change_requested", request(1, "suspended" if n % 2 == 0 else "active")
                )
            [batched] = [e for e in container.entrypoints if isinstance(e, BatchingEventHandler)]
            wait_for(lambda: len(batched.waiting) == len(ids))
            held.release.send(None)
            wait_for(lambda: len(applied(status_db)) == 1 + len(ids))
            wait_for(lambda: {r.correlation_id for r in records} >= set(ids))
    finally:
        logs.worker_log.removeHandler(handler)
        logs.worker_log.setLevel(level)

    assert len(held.calls) == 2 and len(held.calls[1]) == len(ids), held.calls  # the five went as one batch
    for correlation_id in ids:
        [line] = [r for r in records if r.correlation_id == correlation_id]
        assert line.entrypoint == "event gateway.status_change_requested", line.__dict__


def test_a_batch_never_acks_a_malformed_message_still_being_parked(
    config, container_factory, status_db, rabbit_config, rabbit_manager
):
    """A batch is acked with one multiple ack only when nothing older on the channel is unsettled:
    a malformed message delivered first, whose parking is held, stays unacked while the batches
    after it are applied and acked, and is parked and acked once when its parking goes on."""
    track(status_db, *range(1, 31))
    sent = [request(student, "active") for student in range(1, 31)]
    parking, park = Event(), GuardedQueueConsumer._park

    def held_park(consumer, *args):
        parking.wait()
        park(consumer, *args)

    with patch.object(GuardedQueueConsumer, "_park", held_park):
        container = container_factory(StatusService, config)
        container.start()
        Publisher(config["AMQP_URI"]).publish(  # not JSON: refused and parked
            b"{not json",
            exchange="gateway.events",
            routing_key="status_change_requested",
            content_type="application/json",
            content_encoding="utf-8",
        )
        publish(config, sent)
        wait_for(lambda: len(applied(status_db)) == len(sent))

        [batched] = [e for e in container.entrypoints if isinstance(e, BatchingEventHandler)]

        def queue() -> dict:
            return rabbit_manager.get_queue(rabbit_config["vhost"], batched.queue.name)

        # the batches are acked, the malformed message is not: the management API shows it alone unacked
        wait_for(lambda: queue().get("messages_unacknowledged") == 1 and queue().get("messages") == 1, timeout=30)
        parking.send(None)
        with ClusterRpcProxy(config, timeout=10) as rpc:
            [letter] = wait_for(rpc.status.list_dead_letters)
        wait_for(lambda: queue().get("messages") == 0, timeout=30)

    assert letter["malformed"], letter
    assert recorded(status_db) == len(sent), "no batch came again: its channel stayed open"
    assert [tags for tags in batched.queue_consumer.unsettled.values()] == [set()]
