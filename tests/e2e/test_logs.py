"""Logs as JSON lines (``LOG_FORMAT=json``): one request's correlation id in every process's log.

A system of its own (SQLite, a vhost of its own) runs with ``LOG_FORMAT=json``. A status change
and a course completion, each sent with ``X-Request-Id: logs-<unique>-…``, go through the
gateway, status, students, certificates and notifications; each id is then found in the JSON
lines of all five processes and in the mails it caused (``X-Correlation-ID``). Every line every
process wrote is one JSON object with the fields every line carries, and none holds an API key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from tests.conftest import make_db_uris
from tests.e2e.support import MODULES, System, poll, running_system

EVERY_LINE = {"time", "level", "logger", "message", "service", "correlation_id"}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def system(request, rabbit_manager, amqp_uri, tmp_path_factory) -> Iterator[System]:
    """This module's own system, logging JSON lines."""
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    db_uris = make_db_uris("sqlite", log_dir, request)
    with running_system("sqlite", rabbit_manager, amqp_uri, db_uris, log_dir, LOG_FORMAT="json") as system:
        yield system


def log_lines(system: System, name: str) -> list[dict]:
    """Every line ``name`` has written so far, each parsed as JSON (a line that is not fails)."""
    lines = []
    for number, text in enumerate(system.log_path(name).read_text().splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except ValueError:
            raise AssertionError(f"{name}.log line {number} is not JSON: {text!r}") from None
    return lines


def mails_to(system: System, address: str) -> list[EmailMessage]:
    found = []
    for path in Path(system.env["MAIL_DIR"]).glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if message["To"] and address in message["To"]:
            found.append(message)
    return found


def test_a_request_s_correlation_id_is_in_every_process_s_log_and_its_mail(system):
    unique = uuid.uuid4().hex[:12]
    activation, completion = f"logs-{unique}-activation", f"logs-{unique}-completion"
    student = system.create_student(unique)

    accepted = system.request_status(student["id"], "active", "term starts", **{"X-Request-Id": activation})
    assert system.settled_request(accepted["request_id"])["state"] == "applied"
    response = system.post(f"/students/{student['id']}/completion", json={}, headers={"X-Request-Id": completion})
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-Id"] == completion
    assert system.settled_request(response.json()["request_id"])["state"] == "applied"

    # the mails: activation and completion each announced, and the certificate (the completion's)
    received = poll(lambda: mails_to(system, student["email"]), lambda found: len(found) == 3, timeout=TIMEOUT)
    ids = sorted(mail["X-Correlation-ID"] or "(none)" for mail in received)
    assert ids == sorted([activation, completion, completion]), ids
    [certificate_mail] = [mail for mail in received if mail.get_content_type() == "multipart/mixed"]
    assert certificate_mail["X-Correlation-ID"] == completion

    # the log lines: each id in the JSON lines of every process, each line naming its process
    def carrying(correlation_id: str) -> dict[str, list[dict]]:
        return {
            name: [line for line in log_lines(system, name) if line.get("correlation_id") == correlation_id]
            for name in MODULES
        }

    for correlation_id in (activation, completion):
        found = poll(lambda cid=correlation_id: carrying(cid), lambda found: all(found.values()), timeout=TIMEOUT)
        for name, lines in found.items():
            assert {line["service"] for line in lines} == {name}, lines
            assert all(line.get("entrypoint") for line in lines), lines
        gateway_entrypoints = {line["entrypoint"] for line in found["gateway"]}
        # the request's route; and the gateway's read copy hearing the events the request caused
        assert all(
            entrypoint.startswith("http POST /students/") or entrypoint.startswith("event ")
            for entrypoint in gateway_entrypoints
        ), gateway_entrypoints
        assert any(entrypoint.startswith("http POST /students/") for entrypoint in gateway_entrypoints)
        # the gateway's line for the request: its outcome, duration and student
        [answered] = [
            line
            for line in found["gateway"]
            if line["logger"] == "mensageria.worker" and line["entrypoint"].startswith("http ")
        ]
        assert answered["http_status"] == 202 and answered["duration_ms"] > 0, answered
        assert answered["student_id"] == student["id"] and answered["client"] == "127.0.0.1", answered

    # every line of every process: JSON, with the fields every line has, and no API key
    for name in MODULES:
        text = system.log_path(name).read_text()
        assert system.admin_key.split("_")[2] not in text  # the key's secret part, whole key or not
        for line in log_lines(system, name):
            assert set(line) >= EVERY_LINE, (name, line)
