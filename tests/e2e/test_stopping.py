"""Stopping ``make run`` (``bin/run``): whatever mix of SIGINT and SIGTERM reaches
whichever of its processes, every process is gone within the supervisor's
``STOP_GRACE`` (plus a few seconds), and no accepted request is lost.

The system runs as ``make run`` starts it, in a session of its own (as a terminal
or a process manager would start it), on SQLite files and a vhost of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.support import amqp_username, free_port, poll, rabbit_vhost, vhost_uri
from tools.launch import STOP_GRACE

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
STOP_LIMIT = STOP_GRACE + 10  # seconds from the signal until every process is gone
SETTLED = {"applied", "rejected"}


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        children = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        todo.extend(int(child) for child in children)
        found.update(int(child) for child in children)
    return found


def running(pid: int) -> bool:
    """Alive, and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class RunCommand:
    """``bin/run`` in a session of its own; its process group id is its pid."""

    def __init__(self, env: dict[str, str], log_path: Path, base_url: str):
        self.env, self.log_path, self.base_url = env, log_path, base_url
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def launch(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [str(ROOT / "bin/run")], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self) -> None:
        self.launch()
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while self.log().count("mensageria is up") < self.starts:
            assert self.process.poll() is None and time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def processes(self) -> set[int]:
        return descendants(self.process.pid) | {self.process.pid}

    def stop_and_time(self, target: str, signum: int, at_least: int = 11) -> float:
        """Send ``signum`` to the run script alone or to the whole group; seconds until
        every process of the run is gone (fails after ``STOP_LIMIT``)."""
        processes = self.processes()
        assert len(processes) >= at_least, "bin/run, and a supervisor and its nameko run for each of the five"
        started = time.monotonic()
        if target == "group":
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        while (alive := {pid for pid in processes if running(pid)}) and time.monotonic() - started < STOP_LIMIT:
            time.sleep(0.1)
        assert alive == set(), f"still running {STOP_LIMIT:g}s after the signal: {alive}\n{self.log()[-3000:]}"
        self.process.wait(timeout=5)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def run_command_stopped(rabbit_manager, amqp_uri, tmp_path) -> Iterator[RunCommand]:
    port = free_port()
    with rabbit_vhost(rabbit_manager, amqp_username(amqp_uri)) as vhost:
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_DB_URI", "_SECRET"))}
        env.update(
            DATA_DIR=str(tmp_path / "data"),  # secrets and the first key, as on a fresh machine
            RATE_LIMIT_PER_SECOND="100000",  # the load here is the point, not the limit
            RATE_LIMIT_BURST="100000",
            AMQP_URI=vhost_uri(amqp_uri, vhost),
            GATEWAY_ADDRESS=f"127.0.0.1:{port}",
            MAIL_DIR=str(tmp_path / "mail"),
            **{f"{s.upper()}_DB_URI": f"sqlite:///{tmp_path}/{s}.db" for s in SERVICES},
        )
        command = RunCommand(env, tmp_path / "run.log", f"http://127.0.0.1:{port}")
        try:
            yield command
        finally:
            command.kill()


@pytest.fixture
def run_command(run_command_stopped) -> RunCommand:
    run_command_stopped.start()
    return run_command_stopped


SERVICES = ("students", "status", "certificates", "notifications", "gateway")


@pytest.mark.parametrize(
    ("target", "signum"),
    [("script", signal.SIGTERM), ("group", signal.SIGINT), ("script", signal.SIGINT), ("group", signal.SIGTERM)],
    ids=["sigterm-to-the-run-script", "sigint-to-the-group", "sigint-to-the-run-script", "sigterm-to-the-group"],
)
def test_every_process_stops_in_time(run_command, target, signum):
    seconds = run_command.stop_and_time(target, signum)
    print(f"{signal.Signals(signum).name} to the {target}: every process gone in {seconds:.1f}s")
    assert "Traceback" not in run_command.log()


def test_certificates_and_mail_run_at_a_lower_cpu_priority(run_command):
    """``NICE_<SERVICE>``'s defaults: certificates and notifications (their supervisors and every
    ``nameko run`` under them) at niceness +10, the rest as started."""
    modules = {"services.students": 0, "services.status": 0, "gateway.service": 0}
    modules.update({"services.certificates": 10, "services.notifications": 10})
    own = os.getpriority(os.PRIO_PROCESS, 0)
    found: dict[str, set[int]] = {}
    for pid in run_command.processes():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            module = next((m for m in modules if m.encode() in arguments), None)
            if module is not None:
                found.setdefault(module, set()).add(os.getpriority(os.PRIO_PROCESS, pid) - own)
    assert found == {module: {nice} for module, nice in modules.items()}


@pytest.mark.parametrize("after", [0.5, 1.5, 2.5, 3.0, 3.5, 5.0])
def test_ctrl_c_while_starting(run_command_stopped, after):
    """SIGINT to the group at some moment of the start: migrating, importing,
    connecting, waiting for the gateway. Any moment must do."""
    command = run_command_stopped
    command.launch()
    time.sleep(after)
    seconds = command.stop_and_time("group", signal.SIGINT, at_least=1)
    print(f"SIGINT to the group {after:g}s into the start: every process gone in {seconds:.1f}s")
    log = command.log()
    assert "re-send" not in log, log  # a service stopped while starting its consumers stops cleanly
    assert "killing it" not in log, log  # every process stopped, none was killed


def test_sigterm_to_the_group_under_load_loses_no_accepted_request(run_command):
    admin = {"Authorization": f"Bearer {(Path(run_command.env['DATA_DIR']) / 'admin.key').read_text().strip()}"}
    http = requests.Session()
    http.headers.update(admin)
    students = [
        http.post(
            f"{run_command.base_url}/students",
            json={"name": f"Stop {n}", "email": f"stop-{n}-{time.time_ns()}@school.example", "course": "ops"},
            timeout=10,
        ).json()["id"]
        for n in range(20)
    ]
    accepted: list[str] = []
    stop = threading.Event()

    def client(student_ids: list[int]) -> None:
        session = requests.Session()
        session.headers.update(admin)
        targets = ["active", "suspended"]
        n = 0
        while not stop.is_set():
            student_id = student_ids[n % len(student_ids)]
            try:
                response = session.post(
                    f"{run_command.base_url}/students/{student_id}/status",
                    json={"status": targets[n // len(student_ids) % 2], "reason": "load"},
                    timeout=10,
                )
            except requests.RequestException:
                return  # the gateway is going away: nothing was accepted by this call
            if response.status_code == 202:
                accepted.append(response.json()["request_id"])
            elif response.status_code != 503:
                raise AssertionError(f"{response.status_code} {response.text}")
            n += 1

    threads = [threading.Thread(target=client, args=(students[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    poll(lambda: len(accepted), lambda count: count >= 200, timeout=60)
    seconds = run_command.stop_and_time("group", signal.SIGTERM)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    print(f"SIGTERM to the group with requests in flight: gone in {seconds:.1f}s; {len(accepted)} accepted")

    run_command.start()  # again, on the same databases and vhost

    def states() -> dict[str, str]:
        found = {}
        for request_id in accepted:
            response = http.get(f"{run_command.base_url}/status-requests/{request_id}", timeout=10)
            found[request_id] = response.json().get("state") if response.status_code == 200 else response.status_code
        return found

    final = poll(states, lambda found: set(found.values()) <= SETTLED, timeout=120, interval=1.0)
    assert set(final.values()) <= SETTLED, {k: v for k, v in final.items() if v not in SETTLED}
    assert len(final) == len(accepted)
