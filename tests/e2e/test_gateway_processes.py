"""``GATEWAY_PROCESSES=2``: one gateway launcher runs two processes on one port. Connections
reach both; a client that writes through one and reads through the other on a new connection
reads its write, every time; a killed process is replaced without failing any write; SIGTERM
to the launcher stops both.

The system runs as ``make run`` starts it (every process under ``tools.launch``), on SQLite files
and a vhost of its own. Each request here is on a connection of its own, as a client that
reconnects makes it: the kernel chooses the process (``SO_REUSEPORT``), which names itself in
``X-Gateway-Process``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.entrypoints import PROCESS_HEADER
from tests.conftest import make_db_uris
from tests.e2e.support import HTTP_TIMEOUT, System, poll, running_system, tail
from tests.e2e.test_stopping import descendants, running
from tools.launch import STOP_GRACE

PROCESSES = 2
ROUNDS = 60


@pytest.fixture(scope="module")
def gateways(request, rabbit_manager, amqp_uri, tmp_path_factory) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("e2e-gateway-processes")
    db_uris = make_db_uris("sqlite", log_dir, request)
    with running_system(
        "sqlite", rabbit_manager, amqp_uri, db_uris, log_dir, supervised=True, GATEWAY_PROCESSES=str(PROCESSES)
    ) as system:
        yield system


def fresh(system: System, method: str, path: str, **kwargs) -> requests.Response:
    """One request on a new connection (no session), with the tests' admin key."""
    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    headers = {"Authorization": f"Bearer {system.admin_key}", **kwargs.pop("headers", {})}
    response = requests.request(method, system.base_url + path, headers=headers, **kwargs)
    assert response.status_code != 500, response.text
    return response


def gateway_pids(system: System) -> set[int]:
    """The gateway launcher's ``nameko run`` processes."""
    return descendants(system.processes["gateway"].pid)


def answering(system: System, path: str = "/ready", tries: int = 60) -> dict[int, int]:
    """Which processes answered ``path`` on fresh connections: pid -> status of its last answer."""
    found: dict[int, int] = {}
    for _ in range(tries):
        response = fresh(system, "GET", path)
        found[int(response.headers[PROCESS_HEADER])] = response.status_code
    return found


def both_ready(system: System) -> dict[int, int]:
    return poll(
        lambda: answering(system),
        lambda found: len(found) == PROCESSES and set(found.values()) == {200},
        timeout=60,
        interval=0.5,
    )


def read_your_writes(system: System, unique: str) -> int:
    """ROUNDS of PATCH then GET, each on a new connection; every GET shows its PATCH. Returns how
    many rounds read through another process than the one that wrote."""
    student = system.create_student(unique)
    path = f"/students/{student['id']}"
    poll(lambda: answering(system, path, tries=20), lambda found: set(found.values()) == {200})  # both hold it
    crossed = 0
    for n in range(ROUNDS):
        patched = fresh(system, "PATCH", path, json={"name": f"Round {n}"})
        assert patched.status_code == 200, patched.text
        read = fresh(system, "GET", path)
        assert read.status_code == 200, read.text
        wrote, read_by = patched.headers[PROCESS_HEADER], read.headers[PROCESS_HEADER]
        assert read.json() == patched.json(), f"round {n}: written by {wrote}, read by {read_by}"
        assert read.headers["ETag"] == patched.headers["ETag"]
        crossed += wrote != read_by
    return crossed


def test_fresh_connections_reach_every_process_and_each_is_ready(gateways: System) -> None:
    found = both_ready(gateways)
    assert set(found) == gateway_pids(gateways)
    health = answering(gateways, "/health")
    assert set(health) == set(found) and set(health.values()) == {200}


def test_a_write_through_one_process_is_read_through_the_other(gateways: System, unique: str) -> None:
    both_ready(gateways)
    crossed = read_your_writes(gateways, unique)
    assert crossed >= ROUNDS // 8, f"only {crossed} of {ROUNDS} rounds read through the other process"


def test_a_deletion_through_one_process_is_seen_by_the_other(gateways: System, unique: str) -> None:
    both_ready(gateways)
    crossed = 0
    for n in range(20):
        student = gateways.create_student(f"{unique}-{n}")
        path = f"/students/{student['id']}"
        poll(lambda path=path: answering(gateways, path, tries=20), lambda found: set(found.values()) == {200})
        deleted = fresh(gateways, "DELETE", path)
        assert deleted.status_code == 204, deleted.text
        read = fresh(gateways, "GET", path)
        assert read.status_code == 404, (
            f"deleted by {deleted.headers[PROCESS_HEADER]}, read by {read.headers[PROCESS_HEADER]}"
        )
        crossed += deleted.headers[PROCESS_HEADER] != read.headers[PROCESS_HEADER]
    assert crossed >= 2, f"only {crossed} of 20 reads through the other process"


def test_a_killed_process_is_replaced_and_fails_no_write(gateways: System, unique: str) -> None:
    before = set(both_ready(gateways))
    killed = min(before)
    os.kill(killed, signal.SIGKILL)  # its socket file stays behind, held by nobody
    # gone and reaped: its threads may outlive its main one (a zombie), and with them its listening
    # socket, whose queued connections the kernel resets when it closes at last
    poll(lambda: Path(f"/proc/{killed}").exists(), lambda exists: not exists, timeout=30)
    created = fresh(gateways, "POST", "/students", json={"name": "A", "email": f"{unique}@example.org", "course": "c"})
    assert created.status_code == 201, created.text
    student = created.json()
    for n in range(10):  # meanwhile every write goes to the survivor, which skips the dead socket
        patched = fresh(gateways, "PATCH", f"/students/{student['id']}", json={"name": f"Alone {n}"})
        assert patched.status_code == 200, patched.text
    after = set(both_ready(gateways))  # the launcher restarted it
    assert killed not in after and len(after) == PROCESSES
    assert read_your_writes(gateways, f"{unique}-after") > 0


def test_sigterm_to_the_launcher_stops_every_process(gateways: System) -> None:
    both_ready(gateways)
    launcher = gateways.processes["gateway"]
    pids = gateway_pids(gateways)
    assert len(pids) == PROCESSES
    directories = list(Path(tempfile.gettempdir()).glob("mensageria-gateway-*"))
    ours = {d for d in directories for pid in pids if (d / f"{pid}.sock").exists()}
    assert len(ours) == 1, directories
    started = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=STOP_GRACE + 10) == 0, tail(gateways.log_path("gateway"))
    assert not {pid for pid in pids if running(pid)}
    print(f"SIGTERM to the gateway launcher: both processes gone in {time.monotonic() - started:.1f}s")
    log = gateways.log_path("gateway").read_text()
    assert "killing it" not in log and "Traceback" not in log, log[-3000:]
    assert not any(d.exists() for d in ours)  # the shared directory is removed
