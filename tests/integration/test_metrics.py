"""Metrics where the services decide, on a real broker and both databases: a failing handler's
retries and dead letter are counted by outcome, and a service's ``/metrics`` shows the gauges read
at scrape time (its dead letters from the broker, its backlog and outbox from its database)."""

from __future__ import annotations

import uuid

import pytest
import requests
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client.parser import text_string_to_metric_families

from services.infra import metrics
from services.status import StatusService
from services.students import StudentsService
from tests.e2e.support import free_port
from tests.integration.conftest import wait_for
from tests.integration.test_reliability import rename_table, tracked
from tests.integration.test_students import new_student

CONSUMED = "mensageria_messaging_client_consumed_messages_total"
PROCESSED = "mensageria_messaging_process_duration_seconds_count"
HANDLER = {"service": "status", "handler": "handle_status_change_requested"}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict[str, float]:
    return {
        "retried": sample(CONSUMED, **HANDLER, outcome="retried"),
        "dead_lettered": sample(CONSUMED, **HANDLER, outcome="dead_lettered"),
        "acked": sample(CONSUMED, **HANDLER, outcome="acked"),
        "errors": sample(PROCESSED, **HANDLER, outcome="error"),
        "parked": sample("mensageria_dead_letters_parked_total", service="status", reason="failed"),
    }


@pytest.fixture
def served(runner_factory, config):
    """students and status, status serving /metrics on a port of its own."""
    config = {**config, "METRICS_PORT_STATUS": free_port()}
    runner_factory(config, StudentsService, StatusService).start()
    with ClusterRpcProxy(config, timeout=10) as proxy:
        yield proxy, config


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def test_retries_and_the_dead_letter_are_counted_and_the_gauges_follow(served, unique):
    rpc, config = served
    port = config["METRICS_PORT_STATUS"]
    student = new_student(rpc, unique)
    wait_for(lambda: tracked(rpc, student["id"]))
    before = counts()
    status_db = config["DB_URIS"]["status:StatusBase"]
    payload = {"request_id": str(uuid.uuid4()), "student_id": student["id"], "status": "active"}
    rename_table(status_db, "status_requests", "status_requests_broken")
    try:
        event_dispatcher(config)("gateway", "status_change_requested", payload)
        wait_for(rpc.status.list_dead_letters)
    finally:
        rename_table(status_db, "status_requests_broken", "status_requests")

    attempts = config["EVENT_RETRY_ATTEMPTS"]
    moved = {name: value - before[name] for name, value in counts().items()}
    assert moved == {"retried": attempts - 1, "dead_lettered": 1, "acked": 0, "errors": attempts, "parked": 1}

    gauges = wait_for(
        lambda: (found := scrape(port))["mensageria_dead_letters"] != {(("service", "status"),): 0} and found
    )
    assert gauges["mensageria_dead_letters"] == {(("service", "status"),): 1}
    assert gauges["mensageria_status_pending_requests"] == {(): 0}
    assert gauges["mensageria_outbox_pending_rows"] == {(("service", "status"),): 0}

    rpc.status.replay_dead_letters()
    wait_for(lambda: counts()["acked"] - before["acked"] == 1)
    assert wait_for(lambda: scrape(port)["mensageria_dead_letters"] == {(("service", "status"),): 0})
