"""How a parked message is described: parked by mensageria (its own headers) or by the broker
(a quorum queue's delivery limit: RabbitMQ's ``x-death``)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from services.infra.dead_letters import describe

DIED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def message(headers: dict, payload=None) -> SimpleNamespace:
    return SimpleNamespace(headers=headers, properties={"message_id": "m-1"}, payload=payload or {"n": 1})


def death(queue: str, exchange: str, routing_key: str) -> dict:
    return {"count": 1, "reason": "delivery_limit", "queue": queue, "time": DIED, "exchange": exchange,
            "routing-keys": [routing_key]}  # fmt: skip


def test_an_event_the_broker_parked_is_described_from_x_death_and_replayable():
    queue = "evt-status-student_status_changed--notifications.handle_student_status_changed"
    entry = describe(message({"x-death": [death(queue, "status.events", "student_status_changed")],
                              "nameko.correlation_id": "c-1", "x-delivery-count": 0}))  # fmt: skip
    assert entry["handler"] == "notifications.handle_student_status_changed" and entry["queue"] == queue
    assert (entry["exchange"], entry["routing_key"]) == ("status.events", "student_status_changed")
    assert "delivery_limit" in entry["error"] and entry["failed_at"] == DIED.isoformat()
    assert entry["replayable"] and not entry["malformed"] and entry["correlation_id"] == "c-1"


def test_an_rpc_request_the_broker_parked_is_not_replayable():
    entry = describe(message({"x-death": [death("rpc-students", "nameko-rpc", "students.get_student")]}))
    assert (entry["handler"], entry["queue"]) == ("students.rpc", "rpc-students")
    assert entry["routing_key"] == "students.get_student" and entry["replayable"] is False


def test_a_retried_event_keeps_its_original_routing():
    """It came back from a delay queue through the default exchange: its own headers say from where."""
    queue = "evt-gateway-status_change_requested--status.handle_status_change_requested"
    headers = {
        "x-death": [death(queue, "", queue), {**death(queue + ".retry.1000ms", "", queue), "reason": "expired"}],
        "x-mensageria-original-exchange": "gateway.events",
        "x-mensageria-original-routing-key": "status_change_requested",
        "x-mensageria-attempt": 2,
    }
    entry = describe(message(headers))
    assert (entry["exchange"], entry["routing_key"]) == ("gateway.events", "status_change_requested")
    assert entry["attempts"] == 2 and entry["queue"] == queue and entry["replayable"]


def test_what_mensageria_parked_is_described_by_its_own_headers():
    entry = describe(
        message({"x-mensageria-handler": "status.h", "x-mensageria-queue": "q", "x-mensageria-error": "E"})
    )
    assert (entry["handler"], entry["queue"], entry["error"], entry["replayable"]) == ("status.h", "q", "E", True)
    malformed = describe(message({"x-mensageria-handler": "status.rpc", "x-mensageria-malformed": True}))
    assert malformed["malformed"] and malformed["replayable"] is False
