"""mensageria from a program without Nameko: create a student, change its
status, wait until the change is applied and print the student's history.

Against the system ``make run`` starts (same broker)::

    AMQP_URI=amqp://guest:guest@localhost:5672/ .venv/bin/python examples/client_roundtrip.py
"""

from __future__ import annotations

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from clients import BrokerUnavailable, RpcClient, StatusRequestNotFound, UnknownService

AMQP_URI = os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/")


def wait_until_settled(client: RpcClient, request_id: str, timeout: float = 30.0) -> dict:
    """Poll the status request until it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = client.status.get_status_request(request_id)
        except StatusRequestNotFound:  # recorded asynchronously: not there yet
            request = {"state": "pending"}
        if request["state"] != "pending":
            return request
        if time.monotonic() > deadline:
            raise TimeoutError(f"status request {request_id} still pending after {timeout}s")
        time.sleep(0.2)


def main() -> int:
    with RpcClient(AMQP_URI, timeout=5.0) as client:
        email = f"ada.{uuid.uuid4().hex[:8]}@example.org"
        student = client.students.create_student({"name": "Ada Lovelace", "email": email, "course": "Mathematics"})
        print(f"created student {student['id']} <{student['email']}>: {student['status']}")

        request = client.status.request_status_change(
            student["id"],
            "active",
            reason="term starts",
            actor="client_roundtrip",
            idempotency_key=f"start-{email}",
            on_behalf_of="ada.admin",  # the person in this program who asked; the actor stays accountable
        )
        print(f"requested enrolled -> active: request {request['request_id']} ({request['state']})")

        request = wait_until_settled(client, request["request_id"])
        print(f"request {request['request_id']}: {request['state']} {request['error'] or ''}".rstrip())

        print("history:")
        for change in client.status.get_status_history(student["id"])["items"]:
            print(
                f"  {change['occurred_at']}  {change['from_status']} -> {change['to_status']}"
                f"  reason={change['reason']!r} actor={change['actor']} on_behalf_of={change['on_behalf_of']}"
                f" request={change['request_id']}"
            )
        return 0 if request["state"] == "applied" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokerUnavailable as exc:
        sys.exit(f"cannot reach RabbitMQ at AMQP_URI ({exc}); start it, then `make run`")
    except UnknownService as exc:
        sys.exit(f"{exc}: start the services with `make run`")
