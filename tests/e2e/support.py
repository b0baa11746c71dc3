"""Running mensageria as real processes and talking to it over HTTP.

The e2e tests start ``nameko run`` processes exactly as ``bin/run`` does (same
``config.yaml``, configured through the environment), each on its own RabbitMQ
vhost, and drive the gateway with ``requests``. Waiting is always polling with
a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from sqlalchemy.orm import sessionmaker

from gateway.access import store
from services.infra.db import build_engine
from tests.conftest import API_KEY_SECRET, signing_key_path
from tools.autoscale import SCALABLE
from tools.launch import PROCESSES
from tools.local_cluster import NodeError, free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]
NAMEKO = str(Path(sys.executable).parent / "nameko")
CONFIG = "config.yaml"

RPC_TIMEOUT = 2.0
READY_TIMEOUT = 1.0
MAX_BODY_BYTES = 4096
BULK_MAX_ROWS = 5000
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 10.0

ERROR_KEYS = {"error", "message", "details"}

# every process of the system, as `make run` starts them
MODULES = PROCESSES

T = TypeVar("T")


# --- waiting -----------------------------------------------------------------


def poll(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Call ``fetch`` until ``until(value)`` holds; fail with the last value at the deadline."""
    try:
        return wait_until(fetch, until, timeout, interval)
    except NodeError as exc:
        raise AssertionError(str(exc)) from None


# --- RabbitMQ and processes --------------------------------------------------


@contextlib.contextmanager
def rabbit_vhost(rabbit_manager: Any, username: str) -> Iterator[str]:
    """A fresh vhost (random name) that ``username`` may use; deleted afterwards."""
    vhost = f"mensageria_e2e_{uuid.uuid4().hex[:12]}"
    rabbit_manager.create_vhost(vhost)
    try:
        rabbit_manager.set_vhost_permissions(vhost, username, ".*", ".*", ".*")
        yield vhost
    finally:
        rabbit_manager.delete_vhost(vhost)


def vhost_uri(amqp_uri: str, vhost: str) -> str:
    return f"{amqp_uri.rstrip('/')}/{vhost}"


def amqp_username(amqp_uri: str) -> str:
    return urlparse(amqp_uri).username or "guest"


def free_port() -> int:
    return free_ports(1)[0]


def process_env(
    amqp_uri: str, db_uris: dict[str, str], port: int, metrics_ports: dict[str, int] | None = None
) -> dict[str, str]:
    """The environment ``config.yaml`` reads, for every process of one system; each process
    serves ``/metrics`` on its port in ``metrics_ports`` (by name, as in ``MODULES``), none by default;
    a scaling launcher serves none unless its ``METRICS_PORT_LAUNCH_<SERVICE>`` is given."""
    metrics = {f"METRICS_PORT_{name.upper()}": str((metrics_ports or {}).get(name, 0)) for name in MODULES}
    metrics.update({f"METRICS_PORT_LAUNCH_{name.upper()}": "0" for name in SCALABLE})
    databases = {
        f"{key.split(':')[0].upper()}_DB_URI": uri for key, uri in db_uris.items()
    }  # STUDENTS_DB_URI, STATUS_DB_URI, CERTIFICATES_DB_URI, NOTIFICATIONS_DB_URI
    return {
        **os.environ,
        **databases,
        **metrics,
        "AMQP_URI": amqp_uri,
        "GATEWAY_ADDRESS": f"127.0.0.1:{port}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SMTP_HOST": "",  # mail goes to MAIL_DIR as .eml files
        "MAIL_DIR": tempfile.mkdtemp(prefix="mensageria-mail-"),
        "RPC_TIMEOUT": f"{RPC_TIMEOUT:g}",
        "READY_TIMEOUT": f"{READY_TIMEOUT:g}",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "BULK_MAX_ROWS": str(BULK_MAX_ROWS),
        "REQUEST_ID_SECRET": "e2e-request-id-secret",
        "API_KEY_SECRET": API_KEY_SECRET,
        "CERTIFICATE_SIGNING_KEY": signing_key_path(),
        "PYTHONWARNINGS": "ignore",
        "PYTHONUNBUFFERED": "1",
    }


def create_api_key(db_uris: dict[str, str], name: str, scopes: list[str], **options: Any) -> tuple[dict, str]:
    """A key made as ``python -m tools.keys create`` makes it: ``(its record, the key)``."""
    engine = build_engine(db_uris["gateway:GatewayBase"])
    try:
        return store.create_key(sessionmaker(bind=engine), API_KEY_SECRET, name, scopes, **options)
    finally:
        engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def start_process(module: str, env: dict[str, str], log_path: Path, supervised: bool = False) -> subprocess.Popen:
    """``nameko run --config config.yaml <module>``, output to ``log_path``;
    ``supervised``: as ``make run`` starts it, under ``tools.launch``."""
    if supervised:
        command = [sys.executable, "-m", "tools.launch", "--config", CONFIG, module]
    else:
        command = [NAMEKO, "run", "--config", CONFIG, module]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_processes(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM all (nameko stops gracefully), then SIGKILL whatever is left."""
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT  # a killed tools.launch takes its nameko run with it
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# --- the system under test ---------------------------------------------------


@dataclass
class System:
    """Every process of the system on one vhost, and an HTTP client holding an admin key."""

    backend: str
    base_url: str
    vhost: str
    env: dict[str, str]
    log_dir: Path
    db_uris: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    http: requests.Session = field(default_factory=requests.Session)
    admin_key: str = ""
    metrics_ports: dict[str, int] = field(default_factory=dict)  # process name -> its /metrics port

    def metrics(self, name: str) -> str:
        """The Prometheus text a process (``gateway``, ``students``, ...) serves on its metrics port."""
        response = requests.get(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.text

    def session(self, key: str | None = None) -> requests.Session:
        """A new HTTP session that sends ``key`` (default: the admin key tests use)."""
        session = requests.Session()
        session.headers.update(bearer(key or self.admin_key))
        return session

    def create_key(self, name: str, scopes: list[str], **options: Any) -> tuple[dict, str]:
        return create_api_key(self.db_uris, name, scopes, **options)

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tails(self) -> str:
        parts = []
        for name, process in self.processes.items():
            parts.append(f"--- {name} (pid {process.pid}, exit code {process.poll()}) ---")
            parts.append(tail(self.log_path(name)))
        return "\n".join(parts)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Any request; whatever it is, the gateway never answers 500 or a traceback."""
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        response = self.http.request(method, self.base_url + path, **kwargs)
        assert response.status_code != 500, f"{method} {path} -> 500: {response.text}"
        assert "Traceback" not in response.text, f"{method} {path} leaked a traceback: {response.text}"
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until ``GET /ready`` is 200: every service answers through the gateway."""
        self.wait_for("/ready", timeout)

    def wait_for(self, path: str, timeout: float = START_TIMEOUT) -> None:
        """Until ``GET path`` is 200; fails early (with the logs) if a process dies."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise AssertionError(f"mensageria processes exited: {dead}\n{self.log_tails()}")
            try:
                response = self.http.get(f"{self.base_url}{path}", timeout=READY_TIMEOUT * 2 + 2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise AssertionError(f"GET {path} not 200 within {timeout:g}s (last: {last})\n{self.log_tails()}")

    # --- domain helpers ---

    def create_student(self, unique: str, **fields: str) -> dict:
        body = {"name": f"Student {unique}", "email": f"{unique}@example.org", "course": f"course-{unique}"}
        body.update(fields)
        response = self.post("/students", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def request_status(self, student_id: int, status: str, reason: str | None = None, **headers: str) -> dict:
        response = self.post(
            f"/students/{student_id}/status", json={"status": status, "reason": reason}, headers=headers
        )
        assert response.status_code == 202, response.text
        return response.json()

    def settled_request(self, request_id: str, timeout: float = 20.0) -> dict:
        """The status request once it is no longer pending."""

        def fetch() -> dict:
            response = self.get(f"/status-requests/{request_id}")
            assert response.status_code == 200, response.text
            return response.json()

        return poll(fetch, lambda request: request["state"] != "pending", timeout)

    def history(self, student_id: int) -> list[dict]:
        response = self.get(f"/students/{student_id}/history")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def listed(self, **query: str) -> list[dict]:
        response = self.get("/students", params=query)
        assert response.status_code == 200, response.text
        return response.json()["items"]


@contextlib.contextmanager
def running_system(
    backend: str,
    rabbit_manager: Any,
    amqp_uri: str,
    db_uris: dict[str, str],
    log_dir: Path,
    supervised: bool = False,
    **env: str,
) -> Iterator[System]:
    """The whole system on a vhost of its own, ready; stopped (and the vhost gone) on exit."""
    with rabbit_vhost(rabbit_manager, amqp_username(amqp_uri)) as vhost:
        system = start_system(backend, vhost_uri(amqp_uri, vhost), db_uris, log_dir, supervised, **env)
        try:
            system.wait_ready()
            yield system
        finally:
            system.http.close()
            stop_processes(system.processes)


def start_system(
    backend: str, amqp_uri: str, db_uris: dict[str, str], log_dir: Path, supervised: bool = False, **env: str
) -> System:
    """Every process of the system (``MODULES``) on ``amqp_uri``, on a free port (and each
    serving ``/metrics`` on a free port of its own); not waited for."""
    port, *ports = free_ports(1 + len(MODULES))
    metrics_ports = dict(zip(MODULES, ports, strict=True))
    system = System(
        backend=backend,
        base_url=f"http://127.0.0.1:{port}",
        vhost=amqp_uri.rsplit("/", 1)[1],
        env={**process_env(amqp_uri, db_uris, port, metrics_ports), **env},
        log_dir=log_dir,
        db_uris=db_uris,
        metrics_ports=metrics_ports,
    )
    # the tests' own key: every scope, and a rate limit no test reaches (429s are tested with keys of their own)
    _, system.admin_key = system.create_key("e2e tests", ["admin"], rate_per_second=1_000_000, burst=1_000_000)
    system.http.headers.update(bearer(system.admin_key))
    for name, module in MODULES.items():
        system.processes[name] = start_process(module, system.env, system.log_path(name), supervised)
    return system


def assert_error(response: requests.Response, status: int, code: str | set[str]) -> dict:
    """``response`` is the JSON error ``{"error": code, "message": str, "details": dict}``; returns details."""
    assert response.status_code == status, f"expected {status} {code}, got {response.status_code}: {response.text}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] in ({code} if isinstance(code, str) else code), body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["details"], dict), body
    return body["details"]
