"""Quorum queues on a real broker: what the services declare, per-consumer prefetch, and poison
messages, which end in the service's dead letters after ``QUEUE_DELIVERY_LIMIT`` redeliveries."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml
from kombu import Connection, Exchange, Producer
from nameko.standalone.events import event_dispatcher

from services.infra.dead_letters import DeadLetterQueue
from services.infra.retry import ReliableEventHandler, reliable_event_handler
from services.infra.settings import Settings
from services.students import StudentsService
from tests.conftest import make_db_uris, service_config
from tests.integration.conftest import wait_for
from tools.broker import ManagementApi

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(request) -> ManagementApi:
    return ManagementApi(request.config.getoption("RABBIT_API_URI"))


def count(amqp_uri: str, queue: str) -> tuple[int, int]:
    """``(messages, consumers)`` of ``queue`` now."""
    with Connection(amqp_uri) as connection:
        _, messages, consumers = connection.channel().queue_declare(queue, passive=True)
    return messages, consumers


def test_the_services_queues_are_quorum_and_prefetch_is_per_consumer(
    container_factory, rabbit_config, api, tmp_path, request
):
    config = service_config(rabbit_config["AMQP_URI"], make_db_uris("sqlite", tmp_path, request), max_workers=7)
    container_factory(StudentsService, config).start()
    vhost = rabbit_config["vhost"]

    queues = {q["name"]: q for q in api.request("GET", "queues", vhost).json()}
    assert {name for name, q in queues.items() if q["type"] != "quorum"} == set()  # no reply queue: it calls none
    assert queues["rpc-students"]["arguments"]["x-delivery-limit"] == Settings().queue_delivery_limit
    assert queues["students.dead-letters"]["arguments"] == {"x-queue-type": "quorum"}
    consumers = wait_for(lambda: api.request("GET", "consumers", vhost).json())
    assert {c["queue"]["name"] for c in consumers} == {
        "rpc-students",
        "evt-status-student_status_changed--students.handle_student_status_changed",
    }
    # quorum queues refuse a global prefetch: each consumer has its own, max_workers
    assert {c["prefetch_count"] for c in consumers} == {7}


class Poisoned:
    """Its handler fails, and its retry cannot be scheduled (the broker is in trouble, say): the
    event goes back to its queue each time, where the broker counts its deliveries."""

    name = "poisoned"
    calls: list[dict] = []
    failing = True

    @reliable_event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        Poisoned.calls.append(payload)
        if Poisoned.failing:
            raise RuntimeError("poison")


def test_an_event_that_keeps_being_requeued_ends_in_the_dead_letters(container_factory, rabbit_config):
    limit = 2
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "QUEUE_DELIVERY_LIMIT": limit}
    Poisoned.calls, Poisoned.failing = [], True
    container = container_factory(Poisoned, config)
    dead_letters = DeadLetterQueue(config["AMQP_URI"], "poisoned", Settings.from_config(config))
    payload = {"changes": [{"student_id": 1, "status": "active"}], "n": uuid.uuid4().hex}

    with patch.object(ReliableEventHandler, "_retry_or_park", side_effect=ConnectionError("broker away")):
        container.start()
        event_dispatcher(config, headers={"nameko.correlation_id": "poison-1"})(
            "status", "student_status_changed", payload
        )
        wait_for(dead_letters.depth, timeout=20)

    assert len(Poisoned.calls) == limit + 1  # the first delivery and `limit` more
    (letter,) = dead_letters.list()
    queue = "evt-status-student_status_changed--poisoned.handle_student_status_changed"
    assert letter["queue"] == queue and letter["handler"] == "poisoned.handle_student_status_changed"
    assert (letter["exchange"], letter["routing_key"]) == ("status.events", "student_status_changed")
    assert "delivery_limit" in letter["error"] and letter["failed_at"]
    assert letter["payload"] == payload and letter["correlation_id"] == "poison-1"
    assert letter["replayable"] and count(config["AMQP_URI"], queue)[0] == 0

    Poisoned.failing = False  # the cause is fixed: a replay is handled once
    replayed, kept = dead_letters.replay([letter["message_id"]])
    assert (replayed, kept) == ([letter["message_id"]], [])
    wait_for(lambda: len(Poisoned.calls) == limit + 2)
    assert dead_letters.depth() == 0


def test_a_request_that_kills_its_process_ends_in_the_dead_letters(rabbit_config, tmp_path):
    """``rpc-crasher``'s one request kills each process that takes it; after ``QUEUE_DELIVERY_LIMIT``
    redeliveries RabbitMQ moves it to ``crasher.dead-letters``, and the next process lives on."""
    limit = 1
    amqp_uri = rabbit_config["AMQP_URI"]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({"AMQP_URI": amqp_uri, "QUEUE_DELIVERY_LIMIT": limit, "max_workers": 1}))
    command = [sys.executable, "-m", "nameko", "run", "--config", str(config_path), "tests.integration.poison_service"]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: process.poll() is not None or _consumed(amqp_uri, "rpc-crasher"), timeout=30)
        return process

    process = start()
    message_id = str(uuid.uuid4())
    with Connection(amqp_uri) as connection:
        Producer(connection.channel()).publish(
            {"args": [], "kwargs": {}},
            exchange=Exchange("nameko-rpc", "topic", durable=True),
            routing_key="crasher.explode",
            reply_to="nobody-listens",
            correlation_id="c-1",
            message_id=message_id,
            delivery_mode=2,
            serializer="json",
            declare=[],
        )
    crashes = 0
    try:
        for _ in range(limit + 1):
            assert process.wait(timeout=30) == 3
            crashes += 1
            process = start()
        time.sleep(2)
        assert process.poll() is None, "the last process took no poison"
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert crashes == limit + 1
    assert count(amqp_uri, "rpc-crasher")[0] == 0
    dead_letters = DeadLetterQueue(amqp_uri, "crasher", Settings.from_config({"QUEUE_DELIVERY_LIMIT": limit}))
    (letter,) = dead_letters.list()
    assert (letter["queue"], letter["handler"], letter["message_id"]) == ("rpc-crasher", "crasher.rpc", message_id)
    assert (letter["exchange"], letter["routing_key"]) == ("nameko-rpc", "crasher.explode")
    assert "delivery_limit" in letter["error"] and letter["payload"] == {"args": [], "kwargs": {}}
    assert letter["replayable"] is False  # its caller has given up long ago
    assert dead_letters.replay() == ([], [message_id])


def _consumed(amqp_uri: str, queue: str) -> bool:
    try:
        return count(amqp_uri, queue)[1] > 0
    except Exception:  # not declared yet
        return False
