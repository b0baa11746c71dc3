"""The README's run command (``bin/run``, which ``make run`` calls)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DB_URI")}
    env.update(extra)
    return env


def test_missing_broker_is_one_line_and_non_zero(tmp_path):
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [str(ROOT / "bin/run")],
        env=run_env(AMQP_URI=f"amqp://guest:guest@127.0.0.1:{port}/", STUDENTS_DB_URI=f"sqlite:///{tmp_path}/s.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "RabbitMQ is not reachable" in lines[0] and "rabbitmq-server" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "s.db").exists(), "nothing runs (not even migrations) without a broker"


def test_run_migrates_starts_everything_and_stops_on_sigterm(rabbit_config, tmp_path):
    port = free_port()
    env = run_env(
        AMQP_URI=rabbit_config["AMQP_URI"],
        STUDENTS_DB_URI=f"sqlite:///{tmp_path}/students.db",
        STATUS_DB_URI=f"sqlite:///{tmp_path}/status.db",
        CERTIFICATES_DB_URI=f"sqlite:///{tmp_path}/certificates.db",
        NOTIFICATIONS_DB_URI=f"sqlite:///{tmp_path}/notifications.db",
        MAIL_DIR=str(tmp_path / "mail"),
        GATEWAY_ADDRESS=f"127.0.0.1:{port}",
    )
    with open(tmp_path / "run.log", "w") as log:
        process = subprocess.Popen([str(ROOT / "bin/run")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "mensageria is up" not in (tmp_path / "run.log").read_text():
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        assert f"http://127.0.0.1:{port}" in (tmp_path / "run.log").read_text()
        ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        created = requests.post(
            f"http://127.0.0.1:{port}/students",
            json={"name": "Run", "email": "run@school.example", "course": "ops"},
            timeout=5,
        )
        assert created.status_code == 201
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 4  # students, status, certificates, gateway
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert "Traceback" not in (tmp_path / "run.log").read_text(), (tmp_path / "run.log").read_text()
    assert (tmp_path / "students.db").exists() and (tmp_path / "status.db").exists()
    assert process.returncode == 0, (tmp_path / "run.log").read_text()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the run command"
