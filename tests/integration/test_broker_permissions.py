"""The system under least-privilege RabbitMQ users (``tools.broker``), on a real broker.

A fresh vhost (random name, deleted afterwards) and one user per process holding exactly
that process's patterns; students, status, certificates and notifications run as
``nameko run`` processes, each as its own user. The whole course-completion flow is driven
by a non-Nameko caller, the pika client as the ``client`` user, in a plain child process
without eventlet (as its users run it: ``python -m tests.integration.test_broker_permissions
<json params>``); operator calls go through nameko's standalone proxy as the ``shell`` user.
Then the patterns are shown to matter: what another process's user may not do is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("students", "status", "certificates", "notifications")
CHILD_TIMEOUT = 120.0


# --- the parent side: pytest -------------------------------------------------


@pytest.fixture
def db_uris(request, tmp_path) -> dict[str, str]:
    """SQLite only: the broker's permissions do not depend on the database."""
    from tests.conftest import make_db_uris

    return make_db_uris("sqlite", tmp_path, request)


@pytest.fixture
def api(request):
    from tools import broker

    return broker.ManagementApi(request.config.getoption("RABBIT_API_URI"))


@pytest.fixture
def vhost(api, rabbit_manager) -> Iterator[str]:
    from tools import broker

    name = f"mensageria_perm_{uuid.uuid4().hex[:12]}"
    broker.ensure_vhost(api, name)
    try:
        yield name
    finally:
        rabbit_manager.delete_vhost(name)


@contextlib.contextmanager
def broker_users(api: Any) -> Iterator[list[str]]:
    """Names of users to create; each one that exists afterwards is deleted."""
    from tools import broker

    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            with contextlib.suppress(broker.SetupError):
                broker.delete_user(api, name)


@pytest.fixture
def process_uris(request, api, vhost) -> Iterator[dict[str, str]]:
    """``{process: amqp://<its user>:<password>@host/<vhost>}``: a user per process, each with
    exactly that process's patterns (tools.broker) and no tags."""
    from tools import broker

    amqp = urlsplit(request.config.getoption("RABBIT_AMQP_URI"))
    uris = {}
    with broker_users(api) as users:
        for process, grants in broker.PROCESSES.items():
            user, password = f"{vhost}_{process}", secrets.token_urlsafe(16)
            users.append(user)
            broker.ensure_user(api, user, password)
            broker.set_permissions(api, vhost, user, grants.permissions())
            uris[process] = f"amqp://{user}:{password}@{amqp.hostname}:{amqp.port or 5672}/{vhost}"
        yield uris


def run_client(**params: Any) -> dict:
    """The flow, driven by the pika client in a child process without eventlet."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_broker_permissions", json.dumps(params)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, f"the client failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.splitlines()[-1])


def wait_until_serving(shell: Any, processes: dict, logs: Path) -> None:
    """Every service answers ``ping`` (as the shell user); fails with the logs if one died."""
    from nameko.exceptions import RpcTimeout, UnknownService

    from tests.e2e.support import poll, tail

    def answers(service: str) -> bool:
        dead = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"processes exited: {dead}\n" + "\n".join(tail(logs / f"{n}.log") for n in dead))
        try:
            return getattr(shell, service).ping() == {"service": service, "ok": True}
        except (UnknownService, RpcTimeout):
            return False

    for service in processes:
        poll(lambda service=service: answers(service), bool, timeout=60)


def test_services_work_under_users_limited_to_their_patterns(process_uris, db_uris, tmp_path):
    from amqp.exceptions import AccessRefused
    from kombu import Connection
    from nameko.standalone.rpc import ClusterRpcProxy

    from tests.e2e.support import free_port, process_env, start_process, stop_processes

    env = {
        **process_env(process_uris["client"], db_uris, free_port()),
        "MAIL_DIR": str(tmp_path / "mail"),
    }
    unique = uuid.uuid4().hex[:10]
    processes = {}
    try:
        for service in SERVICES:  # each as its own user
            service_env = {**env, "AMQP_URI": process_uris[service]}
            processes[service] = start_process(f"services.{service}", service_env, tmp_path / f"{service}.log")
        with ClusterRpcProxy({"AMQP_URI": process_uris["shell"]}, timeout=10) as shell:
            wait_until_serving(shell, processes, tmp_path)

            seen = run_client(url=process_uris["client"], mail_dir=env["MAIL_DIR"], unique=unique)

            assert seen["forbidden_modules"] == []
            student = seen["student"]
            assert (student["email"], student["status"]) == (f"{unique}@example.org", "enrolled")
            assert (seen["active"], seen["completed"]) == ("applied", "applied")
            assert seen["history"] == ["active", "completed"]
            assert len(seen["certificates"]) == 1
            assert len(seen["mails"]) == 3 and seen["mails"].count("multipart/mixed") == 1  # 2 changes, 1 certificate

            # the operator's path (tools/shell.py): nameko's standalone proxy as the shell user
            listed = shell.students.list_students(course=f"course-{unique}")["items"]
            assert [(s["id"], s["status"]) for s in listed] == [(student["id"], "completed")]
            assert [c["code"] for c in shell.certificates.list_certificates(student["id"])] == seen["certificates"]
            for service in SERVICES:  # nothing failed and was parked on the way
                assert getattr(shell, service).list_dead_letters() == [], service

        # the patterns matter: another process's queues are out of reach
        with Connection(process_uris["students"]) as connection, pytest.raises(AccessRefused):
            connection.channel().basic_consume("rpc-status", callback=lambda message: None)
        with Connection(process_uris["students"]) as connection, pytest.raises(AccessRefused):
            connection.channel().basic_get("status.dead-letters")
        with Connection(process_uris["client"]) as connection, pytest.raises(AccessRefused):
            connection.channel().queue_declare(f"pika_client-{unique}")  # not a reply queue's name
    finally:
        stop_processes(processes)

    for service in SERVICES:
        log = (tmp_path / f"{service}.log").read_text(errors="replace")
        assert "ACCESS_REFUSED" not in log, f"{service} was refused something:\n{log[-3000:]}"


def test_setup_command_makes_a_user_without_tags_idempotently(request, api, vhost):
    from tools import broker

    user, password = f"{vhost}_app", secrets.token_urlsafe(24)
    command = [sys.executable, "-m", "tools.broker", "setup", "--api-uri", request.config.getoption("RABBIT_API_URI")]
    command += ["--vhost", vhost, "--user", user, "--password-env", "TEST_APP_PASSWORD", "--process", "all"]
    with broker_users(api) as users:
        users.append(user)
        for _ in range(2):  # re-running is harmless
            done = subprocess.run(
                command, cwd=ROOT, env={**os.environ, "TEST_APP_PASSWORD": password}, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            assert password not in done.stdout + done.stderr

        assert api.request("GET", "users", user).json()["tags"] in ([], "")
        stored = api.request("GET", "permissions", vhost, user).json()
        assert {op: stored[op] for op in broker.OPERATIONS} == broker.permissions(broker.PROCESSES).as_dict()
        # its password works for AMQP, but it has no access to the management API
        outsider = broker.ManagementApi(f"http://{user}:{password}@{urlsplit(api.base).netloc}")
        with pytest.raises(broker.SetupError, match="401"):
            outsider.request("GET", "overview")


# --- the child side: the pika client, without eventlet -------------------------


def mails_to(email: str, mail_dir: str) -> list[str]:
    """Content types of the mails to ``email`` written to ``mail_dir``."""
    found = []
    for path in Path(mail_dir).glob("*.eml"):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if message["To"] and email in message["To"]:
            found.append(message.get_content_type())
    return found


def eventually(fetch: Callable[[], Any], until: Callable[[Any], bool], timeout: float) -> Any:
    """tests.e2e.support's ``poll``, which cannot be imported here: that module loads nameko."""
    deadline = time.monotonic() + timeout
    while not until(value := fetch()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g}s; last value: {value!r}")
        time.sleep(0.1)
    return value


def client_flow(url: str, mail_dir: str, unique: str) -> dict:
    """Create a student, activate, complete the course; wait for history, certificate and mails."""
    from clients import RpcClient

    email, course = f"{unique}@example.org", f"course-{unique}"
    with RpcClient(url, timeout=10) as client:

        def settled(request: dict) -> str:
            fetch = lambda: client.status.get_status_request(request["request_id"])  # noqa: E731
            return eventually(fetch, lambda found: found["state"] != "pending", timeout=30)["state"]

        student = client.students.create_student({"name": f"Student {unique}", "email": email, "course": course})
        active = client.status.request_status_change(
            student["id"], "active", reason="term starts", actor="client", idempotency_key=f"{unique}-active"
        )
        completed = client.status.request_status_change(
            student["id"], "completed", reason="passed", actor="client", idempotency_key=f"{unique}-done", course=course
        )
        seen = {"student": student, "active": settled(active), "completed": settled(completed)}
        history = eventually(
            lambda: client.status.get_status_history(student["id"])["items"],
            lambda items: any(item["to_status"] == "completed" for item in items),
            timeout=30,
        )
        certificates = eventually(lambda: client.certificates.list_certificates(student["id"]), bool, timeout=30)
    seen["history"] = [item["to_status"] for item in history]
    seen["certificates"] = [certificate["code"] for certificate in certificates]
    seen["mails"] = eventually(lambda: mails_to(email, mail_dir), lambda found: len(found) >= 3, timeout=60)
    seen["forbidden_modules"] = sorted(m for m in ("nameko", "eventlet") if m in sys.modules)
    return seen


if __name__ == "__main__":
    print(json.dumps(client_flow(**json.loads(sys.argv[1])), default=str))
