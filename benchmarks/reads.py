"""Scenario (e): reads — ``GET /students/{id}`` through the gateway, the same read
as a gateway-less RPC, and a bare nameko ``echo`` RPC service (no database)."""

from __future__ import annotations

import os
import time

from benchmarks.core import NO_BACKEND, Context, Row
from benchmarks.cpu import CpuMeter, format_cpu, rabbitmq_pids
from benchmarks.infra import PYTHON, Cleanup, start_process, wait_for_child
from benchmarks.load import Call
from benchmarks.rpc_callers import call_concurrently
from benchmarks.system import START_TIMEOUT, System


def reads(ctx: Context[System], backend: str) -> list[Row]:
    """(e) ``GET /students/{id}``, and the same read as a gateway-less RPC."""
    system = ctx.system(backend)
    clients, total = ctx.sizes.read_concurrency, ctx.sizes.reads
    ids = system.student_ids
    plans = [[Call("GET", f"/students/{ids[(c * 7919 + n) % len(ids)]}") for n in range(c, total, clients)]
             for c in range(clients)]  # fmt: skip
    meter = system.meter()
    meter.start()
    http = system.load(plans, 200)
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
