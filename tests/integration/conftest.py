"""Integration fixtures: the real services on a real RabbitMQ vhost (one per
test) and a real database (SQLite and PostgreSQL, see ``db_uris``)."""

from __future__ import annotations

import time

import pytest
from nameko.events import event_handler
from nameko.standalone.rpc import ClusterRpcProxy

from services.certificates import CertificatesService
from services.exceptions import StatusRequestNotFound
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService

RECEIVED: list[dict] = []


class EventRecorder:
    """A subscriber like any other service's: records each change that
    student_status_changed events carry (one message carries a batch)."""

    name = "recorder"

    @event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        RECEIVED.extend(payload["changes"])


@pytest.fixture
def received() -> list[dict]:
    RECEIVED.clear()
    return RECEIVED


@pytest.fixture
def services(runner_factory, config, received):
    runner = runner_factory(
        config, EventRecorder, StudentsService, StatusService, CertificatesService, NotificationsService
    )
    runner.start()
    return runner


@pytest.fixture
def rpc(config, services):
    with ClusterRpcProxy(config, timeout=10) as proxy:
        yield proxy


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def settled(rpc, request_id: str) -> dict | None:
    """The request once it is applied or rejected; None while pending or not yet recorded."""
    try:
        request = rpc.status.get_status_request(request_id)
    except StatusRequestNotFound:  # queued as an event, not recorded yet
        return None
    return request if request["state"] != "pending" else None
