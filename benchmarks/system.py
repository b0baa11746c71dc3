"""The running mensageria that scenarios (c), (d) and (e) measure, as ``make run`` runs it.

students, status and the gateway each run as ``python -m tools.launch
--config config.yaml <module>`` (the supervisor ``bin/run`` and docker-compose
use), configured through the environment as in ``tests/e2e/support.py``, on a
vhost of their own; SQLite files in a temporary directory, or the PostgreSQL
databases ``mensageria_bench_students`` / ``_status`` / ``_gateway`` (created,
migrated with ``tools.migrate.upgrade``, dropped). The gateway's secrets are
made afresh for each run, and one admin API key with a rate limit no benchmark
reaches; every HTTP request sends it (:meth:`System.load`, :attr:`System.headers`).
Students are created over HTTP first; :class:`System` then offers the scenarios
its database probes, valid workloads and a CPU meter over its processes.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from benchmarks.brokers import DEFAULT, BrokerSetup
from benchmarks.core import SQLITE, Context
from benchmarks.cpu import CpuMeter, postgres_pids, rabbitmq_pids
from benchmarks.infra import PYTHON, Cleanup, descendants, free_port, start_process, wait_for_child
from benchmarks.load import Call, LoadResult, run_load
from benchmarks.memory import RssMeter
from gateway.access import store
from gateway.entrypoints import PROCESS_HEADER
from services.credentials import generate_signing_key
from services.infra.db import build_engine
from tools.launch import PROCESSES
from tools.migrate import HISTORIES, upgrade

MODULES = {name: PROCESSES[name] for name in ("students", "status", "gateway")}
PG_DATABASES = {
    "students": "mensageria_bench_students",
    "status": "mensageria_bench_status",
    "gateway": "mensageria_bench_gateway",  # API keys and the audit trail
}
# started only by the scenarios that need them (:meth:`System.start_more`), so (c)-(e) measure what they did
MORE_MODULES = {name: PROCESSES[name] for name in ("certificates", "notifications")}
MORE_PG_DATABASES = {name: f"mensageria_bench_{name}" for name in MORE_MODULES}
BULK_MAX_ROWS, BULK_BYTES_PER_ROW = 100_000, 64  # config.yaml's default; the upload limit raised with it
UNLIMITED = 1_000_000  # the benchmark key's rate and burst: the limiter never refuses it
START_TIMEOUT = 90.0
SETTLE_TIMEOUT = 300.0
POLL = 0.02
CREATE_CONCURRENCY = 16


@dataclass
class System:
    backend: str
    base_url: str
    amqp_uri: str
    db_uris: dict[str, str]
    log_dir: Path
    cleanup: Cleanup
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)  # every process's environment
    launchers: dict = field(default_factory=dict)  # name -> Popen of tools.launch
    pids: dict[str, int] = field(default_factory=dict)  # name -> pid of its `nameko run`
    engines: dict[str, Engine] = field(default_factory=dict)
    student_ids: list[int] = field(default_factory=list)
    current: dict[int, str] = field(default_factory=dict)  # the status each student will end at
    rabbit_pids: Callable[[], list[int]] = rabbitmq_pids  # the RabbitMQ node(s) it runs on

    # --- life cycle ---------------------------------------------------------

    @classmethod
    def start(cls, ctx: Context, backend: str) -> System:
        cleanup = Cleanup()
        ctx.cleanup.push(f"mensageria on {backend}", cleanup.close)
        setup = ctx.broker_setup or BrokerSetup.shared(DEFAULT, ctx.broker)
        # each system's SQLite files and logs are its own (a system that failed to start leaves its own behind)
        log_dir = Path(tempfile.mkdtemp(prefix=f"ours-{backend}-{setup.name}-", dir=ctx.workdir))
        if backend == SQLITE:
            uris = {service: f"sqlite:///{log_dir}/{service}.db" for service in PG_DATABASES}
        else:
            uris = {service: ctx.postgres.create_database(cleanup, name) for service, name in PG_DATABASES.items()}
        upgrade({"DB_URIS": {HISTORIES[service]: uri for service, uri in uris.items()}}, services=tuple(uris))
        amqp_uri = setup.vhost_uri(cleanup, f"ours_{backend}")
        port = free_port()
        system = cls(backend, f"http://127.0.0.1:{port}", amqp_uri, uris, log_dir, cleanup)
        system.rabbit_pids = setup.rabbit_pids
        for service, uri in uris.items():
            system.engines[service] = build_engine(uri)
            cleanup.push(f"dispose {service} engine", system.engines[service].dispose)
        api_key_secret = secrets.token_urlsafe(32)  # this run's own: no secret has a default
        _, system.api_key = store.create_key(
            sessionmaker(bind=system.engines["gateway"]),
            api_key_secret,
            "benchmark",
            ["admin"],
            rate_per_second=UNLIMITED,
            burst=UNLIMITED,
        )
        bulk_max_rows = ctx.sizes.bulk_max_rows or max(ctx.sizes.bulk_rows, BULK_MAX_ROWS)
        system.env = env = {
            **os.environ,
            "AMQP_URI": amqp_uri,
            "QUEUE_TYPE": setup.queue_type,
            **{f"{service.upper()}_DB_URI": uri for service, uri in uris.items()},
            "GATEWAY_ADDRESS": f"127.0.0.1:{port}",
            "REQUEST_ID_SECRET": secrets.token_urlsafe(32),
            "API_KEY_SECRET": api_key_secret,
            "CERTIFICATE_SIGNING_KEY": _signing_key(log_dir),
            "PUBLIC_BASE_URL": system.base_url,
            "BULK_MAX_ROWS": str(bulk_max_rows),
            "GATEWAY_PROCESSES": str(ctx.sizes.gateway_processes),
            "BULK_MAX_BYTES": str(max(bulk_max_rows * BULK_BYTES_PER_ROW, 33_554_432)),
            "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1",
        }
        for name, module in MODULES.items():
            command = [PYTHON, "-m", "tools.launch", "--config", "config.yaml", module]
            system.launchers[name] = start_process(cleanup, name, command, env, log_dir / f"{name}.log")
        system.pids = {name: wait_for_child(launcher.pid) for name, launcher in system.launchers.items()}
        system._wait_ready()
        system._create_students(ctx.sizes.students)
        return system

    def start_more(self, ctx: Context, env: dict[str, str], ready) -> None:
        """Start certificates and notifications beside the rest (once), with ``env`` added
        (e.g. the SMTP server); ``ready()`` says when they consume."""
        if all(name in self.pids for name in MORE_MODULES):
            return
        if self.backend == SQLITE:
            uris = {name: f"sqlite:///{self.log_dir}/{name}.db" for name in MORE_MODULES}
        else:
            uris = {name: ctx.postgres.create_database(self.cleanup, db) for name, db in MORE_PG_DATABASES.items()}
        upgrade({"DB_URIS": {HISTORIES[name]: uri for name, uri in uris.items()}}, services=tuple(uris))
        for name, uri in uris.items():
            self.db_uris[name] = uri
            self.engines[name] = build_engine(uri)
            self.cleanup.push(f"dispose {name} engine", self.engines[name].dispose)
        self.env.update({f"{name.upper()}_DB_URI": uri for name, uri in uris.items()}, **env)
        for name, module in MORE_MODULES.items():
            command = [PYTHON, "-m", "tools.launch", "--config", "config.yaml", module]
            self.launchers[name] = start_process(self.cleanup, name, command, self.env, self.log_dir / f"{name}.log")
        for name in MORE_MODULES:
            self.pids[name] = wait_for_child(self.launchers[name].pid)
        self._poll(lambda: self.check_alive() or ready(), "certificates and notifications to consume", START_TIMEOUT)

    def check_alive(self) -> None:
        """Raises if a process of the system has exited."""
        dead = [name for name, launcher in self.launchers.items() if launcher.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited; logs in {self.log_dir}")

    def close(self) -> None:
        self.cleanup.close()

    @property
    def headers(self) -> dict[str, str]:
        """What every HTTP request to the gateway carries: the run's admin key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def load(self, plans: list[list[Call]], expected: int) -> LoadResult:
        """:func:`run_load` against this gateway, with the key."""
        return run_load(self.base_url, plans, expected, headers=self.headers)

    def _wait_ready(self) -> None:
        """Until every gateway process has answered ``/ready`` (each request on a new connection,
        which the kernel gives to any of them)."""
        deadline, last, ready = time.monotonic() + START_TIMEOUT, "no answer", set()
        expected = int(self.env.get("GATEWAY_PROCESSES") or 1)
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = requests.get(self.base_url + "/ready", timeout=5)
                if response.status_code == 200:
                    ready.add(response.headers.get(PROCESS_HEADER))
                    if len(ready) >= expected:
                        return
                    continue
                last = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready within {START_TIMEOUT:g}s ({last}); logs in {self.log_dir}")

    def _create_students(self, count: int) -> None:
        tag = os.urandom(4).hex()
        calls = [
            Call("POST", "/students", {"name": f"Student {n}", "email": f"s{n}-{tag}@example.org", "course": "Bench"})
            for n in range(count)
        ]
        result = self.load([calls[i::CREATE_CONCURRENCY] for i in range(CREATE_CONCURRENCY)], 201)
        if result.ok != count:
            raise RuntimeError(f"creating students: {result.ok}/{count} created ({result.failures()})")
        print(f"  created {count} students over HTTP at {result.rate:,.0f}/s ({CREATE_CONCURRENCY} clients)")
        with self.engines["students"].connect() as connection:
            self.student_ids = list(connection.scalars(text("SELECT id FROM students ORDER BY id")))
        self.current = dict.fromkeys(self.student_ids, "enrolled")
        # the status service learns of them from student_created events: wait, so none waits for a lookup
        self._poll(
            lambda: self._scalar("status", "SELECT count(*) FROM student_statuses") >= count,
            "the status service to know every student",
        )

    # --- database probes ----------------------------------------------------

    def _scalar(self, service: str, sql: str, **params) -> int:
        with self.engines[service].connect() as connection:
            return connection.scalar(text(sql), params) or 0

    def _poll(self, done, what: str, timeout: float = SETTLE_TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.log_dir}")
            time.sleep(POLL)
        return time.monotonic()

    def last_seq(self) -> int:
        return self._scalar("status", "SELECT max(seq) FROM status_requests")

    def wait_settled(self, after_seq: int, count: int) -> float:
        """When ``count`` requests recorded after ``after_seq`` are no longer pending."""
        # nothing after ``seq`` left in the applier's queue, then how many were recorded: while any is
        # pending the answer is 0 at once, instead of a count through every row recorded since
        sql = (
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM status_pending WHERE seq > :seq) THEN 0"
            " ELSE (SELECT count(*) FROM status_requests WHERE seq > :seq) END"
        )
        return self._poll(lambda: self._scalar("status", sql, seq=after_seq) >= count, f"{count} requests to settle")

    def states_since(self, after_seq: int) -> dict[str, int]:
        with self.engines["status"].connect() as connection:
            rows = connection.execute(
                text("SELECT state, count(*) FROM status_requests WHERE seq > :seq GROUP BY state"), {"seq": after_seq}
            )
            return dict(rows.all())

    def wait_read_copy(self, timeout: float = SETTLE_TIMEOUT) -> float:
        """When the students service's read copy reflects every applied change."""
        applied = self._scalar("status", "SELECT count(*) FROM status_history")
        return self._poll(
            lambda: self._scalar("students", "SELECT sum(status_version) FROM students") >= applied,
            "the students' read copy to catch up",
            timeout,
        )

    # --- workloads ----------------------------------------------------------

    def next_target(self, student: int) -> str:
        """The next valid change for ``student``: enrolled → active → suspended → active → …"""
        self.current[student] = "suspended" if self.current[student] == "active" else "active"
        return self.current[student]

    def status_plans(self, clients: int, total: int) -> list[list[Call]]:
        """``total`` valid changes (each student alternates active/suspended), split over clients.

        Each client owns its own students and goes round them, so two requests
        for one student are never in flight at once and arrive in order.
        """
        plans = []
        for client in range(clients):
            owned = self.student_ids[client::clients]
            share = total // clients + (1 if client < total % clients else 0)
            calls = []
            for n in range(share):
                student = owned[n % len(owned)]
                body = {"status": self.next_target(student), "reason": "benchmark"}
                calls.append(Call("POST", f"/students/{student}/status", body))
            plans.append(calls)
        return plans

    def process_groups(self) -> dict:
        """What the meters watch: each service (every process under its launcher: all gateway
        processes, all instances), RabbitMQ, our PostgreSQL backends, the client."""
        groups = {name: (lambda pid=launcher.pid: descendants(pid)) for name, launcher in self.launchers.items()}
        groups["rabbitmq"] = self.rabbit_pids
        if self.backend != SQLITE:
            groups["postgres"] = lambda: postgres_pids([*PG_DATABASES.values(), *MORE_PG_DATABASES.values()])
        groups["client"] = lambda: [os.getpid()]
        return groups

    @property
    def gateways(self) -> str:
        """What a row's name adds when the gateway runs as several processes: ``, 2 gateway processes``."""
        count = int(self.env.get("GATEWAY_PROCESSES") or 1)
        return f", {count} gateway processes" if count > 1 else ""

    def meter(self) -> CpuMeter:
        return CpuMeter(self.process_groups())

    def rss_meter(self) -> RssMeter:
        return RssMeter(self.process_groups())


def _signing_key(directory: Path) -> str:
    """A certificate signing key made for this run."""
    path = directory / "certificate-signing-key.pem"
    if not path.exists():
        generate_signing_key(path, bits=2048)
    return str(path)
