"""Scenarios (c) and (e): mensageria itself, as ``make run`` runs it.

students, status and the gateway each run as ``python -m tools.launch
--config config.yaml <module>`` (the supervisor ``bin/run`` and docker-compose
use), configured through the environment as in ``tests/e2e/support.py``, on a
vhost of their own; SQLite files in a temporary directory, or the PostgreSQL
databases ``mensageria_bench_students`` / ``mensageria_bench_status``
(created, migrated with ``tools.migrate.upgrade``, dropped). Students are
created over HTTP first; the measured clients then talk HTTP to the gateway.

applied/s is read from the status database itself (``status_requests`` rows
no longer pending), which the runner polls every 20 ms after the last 202.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import Engine, text

from benchmarks import profiling
from benchmarks.core import NO_BACKEND, SQLITE, Context, Row
from benchmarks.infra import (
    PYTHON,
    Cleanup,
    CpuMeter,
    format_cpu,
    postgres_pids,
    rabbitmq_pids,
    start_process,
    wait_for_child,
)
from benchmarks.load import Call, run_load
from benchmarks.raw_pika import PipelinedPublisher
from benchmarks.rpc_callers import call_concurrently
from services.infra.db import build_engine
from tools.migrate import upgrade

MODULES = {"students": "services.students", "status": "services.status", "gateway": "gateway.service"}
PG_DATABASES = {"students": "mensageria_bench_students", "status": "mensageria_bench_status"}
START_TIMEOUT = 90.0
SETTLE_TIMEOUT = 300.0
POLL = 0.02
CREATE_CONCURRENCY = 16
EVENT = "status_change_requested"  # gateway.events → the status service's durable queue


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class System:
    backend: str
    base_url: str
    amqp_uri: str
    db_uris: dict[str, str]
    log_dir: Path
    cleanup: Cleanup
    launchers: dict = field(default_factory=dict)  # name -> Popen of tools.launch
    pids: dict[str, int] = field(default_factory=dict)  # name -> pid of its `nameko run`
    engines: dict[str, Engine] = field(default_factory=dict)
    student_ids: list[int] = field(default_factory=list)
    current: dict[int, str] = field(default_factory=dict)  # the status each student will end at

    # --- life cycle ---------------------------------------------------------

    @classmethod
    def start(cls, ctx: Context, backend: str) -> System:
        cleanup = Cleanup()
        ctx.cleanup.push(f"mensageria on {backend}", cleanup.close)
        log_dir = ctx.workdir / f"ours-{backend}"
        log_dir.mkdir(parents=True, exist_ok=True)
        if backend == SQLITE:
            uris = {service: f"sqlite:///{log_dir}/{service}.db" for service in PG_DATABASES}
        else:
            uris = {service: ctx.postgres.create_database(cleanup, name) for service, name in PG_DATABASES.items()}
        db_uris = {"students:StudentsBase": uris["students"], "status:StatusBase": uris["status"]}
        upgrade({"DB_URIS": db_uris}, services=("students", "status"))
        amqp_uri = ctx.broker.create_vhost(cleanup, f"ours_{backend}")
        port = free_port()
        system = cls(backend, f"http://127.0.0.1:{port}", amqp_uri, uris, log_dir, cleanup)
        env = {
            **os.environ,
            "AMQP_URI": amqp_uri,
            "STUDENTS_DB_URI": uris["students"],
            "STATUS_DB_URI": uris["status"],
            "GATEWAY_ADDRESS": f"127.0.0.1:{port}",
            "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1",
        }
        for name, module in MODULES.items():
            command = [PYTHON, "-m", "tools.launch", "--config", "config.yaml", module]
            system.launchers[name] = start_process(cleanup, name, command, env, log_dir / f"{name}.log")
        for service, uri in uris.items():
            system.engines[service] = build_engine(uri)
            cleanup.push(f"dispose {service} engine", system.engines[service].dispose)
        system.pids = {name: wait_for_child(launcher.pid) for name, launcher in system.launchers.items()}
        system._wait_ready()
        system._create_students(ctx.sizes.students)
        return system

    def close(self) -> None:
        self.cleanup.close()

    def _wait_ready(self) -> None:
        deadline, last = time.monotonic() + START_TIMEOUT, "no answer"
        while time.monotonic() < deadline:
            dead = [name for name, launcher in self.launchers.items() if launcher.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited; logs in {self.log_dir}")
            try:
                response = requests.get(self.base_url + "/ready", timeout=5)
                if response.status_code == 200:
                    return
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
        result = run_load(self.base_url, [calls[i::CREATE_CONCURRENCY] for i in range(CREATE_CONCURRENCY)], 201)
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
        sql = "SELECT count(*) FROM status_requests WHERE seq > :seq AND state != 'pending'"
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

    def meter(self) -> CpuMeter:
        groups = {name: (lambda pid=pid: [pid]) for name, pid in self.pids.items()}
        groups["rabbitmq"] = rabbitmq_pids
        if self.backend != SQLITE:
            groups["postgres"] = lambda: postgres_pids(PG_DATABASES.values())
        groups["client"] = lambda: [os.getpid()]
        return CpuMeter(groups)


# --- scenarios ----------------------------------------------------------------


def status_changes(ctx: Context, backend: str) -> list[Row]:
    """(c) ``POST /students/{id}/status`` at each concurrency: accepted/s (202s) and applied/s."""
    system = ctx.system(backend)
    rows = []
    for clients, total in zip(ctx.sizes.concurrency, ctx.sizes.status_requests, strict=True):
        if clients > len(system.student_ids):
            raise ValueError(f"{clients} clients need at least as many students (--students)")
        plans = system.status_plans(clients, total)
        after_seq = system.last_seq()
        profilers = _start_profilers(ctx, system, clients)
        posting = system.meter()
        posting.start()
        result = run_load(system.base_url, plans, 202)
        posting_cpu = posting.stop()
        draining = system.meter()
        draining.start()
        settled = system.wait_settled(after_seq, result.ok)
        draining_cpu = draining.stop()
        states = system.states_since(after_seq)
        read_copy = system.wait_read_copy()
        _finish_profilers(ctx, profilers, backend)
        failures = result.failures()
        rows.append(
            Row(
                "c",
                "POST /students/{id}/status → 202",
                backend,
                clients,
                result.rate,
                result.ok,
                result.percentile_ms(0.50),
                result.percentile_ms(0.99),
                notes=(f"not accepted: {failures}; " if failures else "") + format_cpu(posting_cpu, result.rate),
            )
        )
        rows.append(
            Row(
                "c",
                "status change applied (first POST → last applied)",
                backend,
                clients,
                result.ok / (settled - result.started),
                result.ok,
                notes=(
                    f"states {states}; applied {settled - result.finished:.2f}s after the last 202, "
                    f"read copy {read_copy - settled:.2f}s later"
                    # CPU over a drain shorter than ~1 s is mostly tick noise
                    + (f"; while draining {format_cpu(draining_cpu)}" if settled - result.finished > 1 else "")
                ),
            )
        )
        print(f"  {clients:>3} clients: {result.rate:,.0f} accepted/s, {rows[-1].ops:,.0f} applied/s {states}")
    return rows


def status_backlog(ctx: Context, backend: str) -> list[Row]:
    """(c) the status service alone: ``status_change_requested`` events published
    straight into its queue (pika, pipelined confirms, as fast as the broker takes
    them), timed until all are applied — its capacity with the gateway out of the way."""
    system = ctx.system(backend)
    total = ctx.sizes.backlog
    bodies = []
    for n in range(total):
        student = system.student_ids[n % len(system.student_ids)]
        event = {"request_id": str(uuid.uuid4()), "student_id": student, "status": system.next_target(student)}
        event.update(reason="benchmark", actor="benchmark", idempotency_key=None, course=None)
        bodies.append(json.dumps(event).encode())
    after_seq = system.last_seq()
    meter = system.meter()
    meter.start()
    publisher = PipelinedPublisher(system.amqp_uri, bodies, ctx.sizes.raw_window, "gateway.events", EVENT)
    publisher.run()
    settled = system.wait_settled(after_seq, total)
    cpu = meter.stop()
    states = system.states_since(after_seq)
    system.wait_read_copy()
    queued = publisher.finished - publisher.started
    rate = total / (settled - publisher.started)
    return [
        Row(
            "c",
            "status service alone: queued events → applied",
            backend,
            None,
            rate,
            total,
            notes=f"states {states}; all {total} queued in {queued:.2f}s; {format_cpu(cpu, rate)}",
        )
    ]


def reads(ctx: Context, backend: str) -> list[Row]:
    """(e) ``GET /students/{id}``, and the same read as a gateway-less RPC."""
    system = ctx.system(backend)
    clients, total = ctx.sizes.read_concurrency, ctx.sizes.reads
    ids = system.student_ids
    plans = [[Call("GET", f"/students/{ids[(c * 7919 + n) % len(ids)]}") for n in range(c, total, clients)]
             for c in range(clients)]  # fmt: skip
    meter = system.meter()
    meter.start()
    http = run_load(system.base_url, plans, 200)
    cpu = meter.stop()
    rows = [
        Row(
            "e",
            "GET /students/{id}",
            backend,
            clients,
            http.rate,
            http.ok,
            http.percentile_ms(0.50),
            http.percentile_ms(0.99),
            notes=(f"failed: {http.failures()}; " if http.failures() else "") + format_cpu(cpu, http.rate),
        )
    ]
    rpc_meter = system.meter()
    rpc = call_concurrently(system.amqp_uri, "students", "get_student", ids, total, clients, on_start=rpc_meter.start)
    rows.append(
        Row(
            "e",
            "RPC students.get_student (no gateway)",
            backend,
            clients,
            rpc.rate,
            len(rpc.latencies),
            rpc.percentile_ms(0.50),
            rpc.percentile_ms(0.99),
            notes=(f"errors: {rpc.errors[:3]}; " if rpc.errors else "")
            + "ClusterRpcProxy per caller thread, 2 processes; "
            + format_cpu(_with_callers(rpc_meter.stop(), rpc), rpc.rate),
        )
    )
    return rows


ECHO_PAYLOAD = {
    "id": 123,
    "name": "Student 123",
    "email": "s123@example.org",
    "course": "Bench",
    "status": "active",
    "status_version": 3,
    "version": 1,
    "created_at": "2025-01-01T00:00:00+00:00",
    "updated_at": "2025-01-01T00:00:00+00:00",
}


def echo(ctx: Context, backend: str) -> list[Row]:
    """(e) a bare nameko ``echo`` RPC (a student-sized dict), 16 callers: the RPC floor under every read."""
    cleanup = Cleanup()
    ctx.cleanup.push("echo service", cleanup.close)
    try:
        amqp_uri = ctx.broker.create_vhost(cleanup, "echo")
        env = {**os.environ, "AMQP_URI": amqp_uri, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
        command = [PYTHON, "-m", "tools.launch", "--config", "config.yaml", "benchmarks.echo"]
        launcher = start_process(cleanup, "echo service", command, env, ctx.workdir / "echo.log")
        pid = wait_for_child(launcher.pid)
        _wait_echo(amqp_uri)
        meter = CpuMeter({"echo": lambda: [pid], "rabbitmq": rabbitmq_pids, "client": lambda: [os.getpid()]})
        clients = ctx.sizes.read_concurrency
        result = call_concurrently(
            amqp_uri, "bench_echo", "echo", [ECHO_PAYLOAD], ctx.sizes.echo_calls, clients, on_start=meter.start
        )
        cpu = _with_callers(meter.stop(), result)
        return [
            Row(
                "e",
                "RPC echo (bare nameko, no DB)",
                NO_BACKEND,
                clients,
                result.rate,
                len(result.latencies),
                result.percentile_ms(0.50),
                result.percentile_ms(0.99),
                notes=(f"errors: {result.errors[:3]}; " if result.errors else "")
                + "ClusterRpcProxy per caller thread, 2 processes; "
                + format_cpu(cpu, result.rate),
            )
        ]
    finally:
        cleanup.close()


def _with_callers(usage: dict[str, float], result) -> dict[str, float]:
    """Move the RPC caller processes' own CPU from "other" to "client"."""
    callers = result.client_cpu_percent
    return {
        **usage,
        "client": usage.get("client", 0.0) + callers,
        "other": max(0.0, usage.get("other", 0.0) - callers),
    }


def _wait_echo(amqp_uri: str, timeout: float = START_TIMEOUT) -> None:
    from nameko.standalone.rpc import ClusterRpcProxy

    deadline = time.monotonic() + timeout
    while True:
        try:
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=2) as rpc:
                rpc.bench_echo.echo(1)
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- profiling (c) at its highest concurrency ---------------------------------


def _start_profilers(ctx: Context, system: System, clients: int) -> dict:
    if ctx.profile_dir is None or clients != max(ctx.sizes.concurrency):
        return {}
    ctx.profile_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: (path, profiling.record(pid, path, ctx.profile_seconds))
        for name, pid in system.pids.items()
        for path in [ctx.profile_dir / f"{system.backend}-c{clients}-{name}.speedscope.json"]
    }


def _finish_profilers(ctx: Context, profilers: dict, backend: str) -> None:
    summaries = []
    for name, (path, process) in profilers.items():
        error = profiling.finish(process, ctx.profile_seconds)
        if error is not None or not path.exists():
            summaries.append(f"{name}: py-spy failed: {error}")
            continue
        summaries.append(profiling.summarise(path, ctx.profile_seconds))
    if summaries:
        report = "\n\n".join(summaries)
        (ctx.profile_dir / f"summary-{backend}.txt").write_text(report + "\n")
        print(report)
