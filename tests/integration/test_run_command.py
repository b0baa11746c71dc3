"""The README's run command (``bin/run``, which ``make run`` calls)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_DB_URI", "_SECRET"))}
    env.update(extra)
    return env


@pytest.mark.parametrize("nodes", [1, 2])
def test_missing_broker_is_one_line_and_non_zero(tmp_path, nodes):
    ports = [free_port() for _ in range(nodes)]  # nothing listens there
    uri = ";".join(f"amqp://guest:guest@127.0.0.1:{port}/" for port in ports)
    result = subprocess.run(
        [str(ROOT / "bin/run")],
        env=run_env(AMQP_URI=uri, STUDENTS_DB_URI=f"sqlite:///{tmp_path}/s.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "RabbitMQ is not reachable" in lines[0] and "rabbitmq-server" in lines[0]
    assert all(f"127.0.0.1:{port}/" in lines[0] for port in ports), lines[0]  # every node named
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "s.db").exists(), "nothing runs (not even migrations) without a broker"


def test_run_migrates_starts_everything_and_stops_on_sigterm(rabbit_config, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = run_env(
        AMQP_URI=rabbit_config["AMQP_URI"],
        STUDENTS_DB_URI=f"sqlite:///{tmp_path}/students.db",
        STATUS_DB_URI=f"sqlite:///{tmp_path}/status.db",
        CERTIFICATES_DB_URI=f"sqlite:///{tmp_path}/certificates.db",
        NOTIFICATIONS_DB_URI=f"sqlite:///{tmp_path}/notifications.db",
        GATEWAY_DB_URI=f"sqlite:///{data}/gateway.db",
        DATA_DIR=str(data),
        MAIL_DIR=str(tmp_path / "mail"),
        GATEWAY_ADDRESS=f"127.0.0.1:{port}",
    )
    base = f"http://127.0.0.1:{port}"
    told = f"mensageria: the admin API key is in {data}/admin.key (export MENSAGERIA_KEY=$(cat {data}/admin.key))"

    def first_start(log: str) -> None:
        assert log.count(told) == 1, log  # where the first key is, in one line
        assert stat.S_IMODE((data / "admin.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "secrets.env").stat().st_mode) == 0o600
        secrets = dict(line.split("=", 1) for line in (data / "secrets.env").read_text().splitlines())
        assert set(secrets) == {"REQUEST_ID_SECRET", "API_KEY_SECRET"} and all(len(v) >= 40 for v in secrets.values())
        assert stat.S_IMODE((data / "certificate-signing-key.pem").stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in (data / "certificate-signing-key.pem").read_bytes()
        # the certificates service is not among /ready's checks: on a busy machine it may still be starting
        # (read timeout past the gateway's RPC timeout, 5 s: until the service answers, the gateway does, 503)
        jwks = wait_for(
            lambda: (r := requests.get(f"{base}/.well-known/jwks.json", timeout=15)).ok and r.json(), timeout=60
        )
        assert [key["kty"] for key in jwks["keys"]] == ["RSA"] and "d" not in jwks["keys"][0]
        key = (data / "admin.key").read_text().strip()
        assert requests.get(f"{base}/ready", timeout=5).status_code == 200
        assert requests.post(f"{base}/students", json={}, timeout=5).status_code == 401  # no open mode
        created = requests.post(
            f"{base}/students",
            json={"name": "Run", "email": "run@school.example", "course": "ops"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert created.status_code == 201, created.text

    children = run_until_up(env, tmp_path / "run.log", first_start)
    kept = {name: (data / name).read_text() for name in ("admin.key", "secrets.env", "certificate-signing-key.pem")}

    def second_start(log: str) -> None:
        assert log.count(told) == 1, log
        assert {name: (data / name).read_text() for name in kept} == kept  # reused, not replaced
        key = kept["admin.key"].strip()
        read = requests.get(f"{base}/students", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert read.status_code == 200 and read.json()["items"][0]["email"] == "run@school.example"

    run_until_up(env, tmp_path / "run-again.log", second_start)
    assert (tmp_path / "students.db").exists() and (tmp_path / "status.db").exists()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the run command"


def run_until_up(env: dict, log_path: Path, check) -> list[str]:
    """``bin/run`` until it says it is up; ``check(its output)``; then SIGTERM: it stops cleanly."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(ROOT / "bin/run")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "mensageria is up" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert f"http://127.0.0.1:{env['GATEWAY_ADDRESS'].rsplit(':', 1)[1]}" in log_path.read_text()
        check(log_path.read_text())
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 4  # students, status, certificates, gateway
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert "Traceback" not in log_path.read_text(), log_path.read_text()
    assert process.returncode == 0, log_path.read_text()
    return children


@pytest.mark.parametrize("missing", ["REQUEST_ID_SECRET", "API_KEY_SECRET"])
def test_nameko_run_refuses_a_gateway_without_its_secrets_in_one_line(tmp_path, missing):
    env = run_env(
        REQUEST_ID_SECRET="set",
        API_KEY_SECRET="set",
        GATEWAY_DB_URI=f"sqlite:///{tmp_path}/gateway.db",
        AMQP_URI=f"amqp://guest:guest@127.0.0.1:{free_port()}/",  # never reached: it stops before
        PYTHONWARNINGS="ignore",
    )
    env[missing] = ""
    result = nameko_run(env, "gateway.service")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"mensageria: config: {missing} is not set; set the environment variable {missing} "
        "(`make run` generates one into the data directory)"
    ]


@pytest.mark.parametrize(
    "key, message",
    [
        (
            "",
            "config: CERTIFICATE_SIGNING_KEY is not set; set the environment variable CERTIFICATE_SIGNING_KEY "
            "(`make run` generates one into the data directory)",
        ),
        (
            "{tmp}/absent.pem",
            "config: CERTIFICATE_SIGNING_KEY: cannot read the signing key {tmp}/absent.pem: No such file or directory",
        ),
        (
            "{tmp}/garbage.pem",
            "config: CERTIFICATE_SIGNING_KEY: the signing key {tmp}/garbage.pem is not a PEM RSA or EC private key",
        ),
    ],
)
def test_nameko_run_refuses_certificates_without_a_usable_signing_key_in_one_line(tmp_path, key, message):
    (tmp_path / "garbage.pem").write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    env = run_env(
        CERTIFICATE_SIGNING_KEY=key.format(tmp=tmp_path),
        CERTIFICATES_DB_URI=f"sqlite:///{tmp_path}/certificates.db",
        AMQP_URI=f"amqp://guest:guest@127.0.0.1:{free_port()}/",  # never reached: it stops before
        PYTHONWARNINGS="ignore",
    )
    result = nameko_run(env, "services.certificates")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"mensageria: {message.format(tmp=tmp_path)}"]


def nameko_run(env: dict, module: str) -> subprocess.CompletedProcess:
    """``nameko run`` of ``module`` as an operator would start it, to its end."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "nameko"), "run", "--config", "config.yaml", module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
