"""Which service a queue belongs to, the vhost of an AMQP URI, and the per-service totals the
console shows from the management API's queue list."""

from __future__ import annotations

import pytest

from gateway.console import queues


@pytest.mark.parametrize(
    ("queue", "service"),
    [
        ("rpc-status", "status"),
        ("status.dead-letters", "status"),
        ("evt-gateway-status_change_requested--status.handle_status_change_requested", "status"),
        ("evt-status-student_status_changed--students.handle_student_status_changed.retry.1000ms", "students"),
        ("evt-certificates-certificate_issued--notifications.handle_certificate_issued", "notifications"),
        ("rpc-statusx", None),
        ("something-else", None),
    ],
)
def test_a_queue_belongs_to_the_service_that_consumes_it(queue, service):
    assert queues.owner(queue) == service


@pytest.mark.parametrize(
    ("uri", "vhost"),
    [
        ("amqp://u:p@h:5672/mensageria", "mensageria"),
        ("amqp://u:p@h:5672/", "/"),
        ("amqp://u:p@h:5672", "/"),
        ("amqp://u:p@h:5672/a%2Fb", "a/b"),
        ("amqp://u:p@h1:5672/one;amqp://u:p@h2:5672/one", "one"),
    ],
)
def test_the_vhost_of_an_amqp_uri(uri, vhost):
    assert queues.vhost_of(uri) == vhost


def test_per_service_totals_leave_dead_letters_out():
    table = [
        {"name": "rpc-status", "service": "status", "ready": 2, "unacked": 1, "consumers": 1},
        {"name": "status.dead-letters", "service": "status", "ready": 9, "unacked": 0, "consumers": 0},
        {"name": "evt-x--status.h", "service": "status", "ready": 0, "unacked": 4, "consumers": 2},
        {"name": "other", "service": None, "ready": 5, "unacked": 0, "consumers": 0},
    ]
    totals = queues.by_service(table)
    assert totals["status"] == {"consumers": 3, "backlog": 7}
    assert totals["students"] == {"consumers": 0, "backlog": 0}
