"""Scenario (c): status changes through mensageria, and the status service alone.

The measured clients talk HTTP to the gateway of the running :class:`System`;
applied/s is read from the status database itself (``status_requests`` rows no
longer pending), which the runner polls every 20 ms after the last 202.
"""

from __future__ import annotations

import json

from benchmarks import profiling
from benchmarks.core import Context, Row
from benchmarks.cpu import format_cpu
from benchmarks.raw_pika import PipelinedPublisher
from benchmarks.system import System
from gateway import request_ids
from services.infra import brokers

EVENT = "status_change_requested"  # gateway.events → the status service's durable queue


def status_changes(ctx: Context[System], backend: str) -> list[Row]:
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
        result = system.load(plans, 202)
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
                "POST /students/{id}/status → 202" + system.gateways,
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
                "status change applied (first POST → last applied)" + system.gateways,
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
        gateway_ms = posting_cpu.get("gateway", 0.0) * 10 / max(result.rate, 1e-9)
        print(
            f"  {clients:>3} clients: {result.rate:,.0f} accepted/s, {rows[-1].ops:,.0f} applied/s {states}; "
            f"gateway {gateway_ms:.2f} ms CPU per request"
        )
    return rows


def status_backlog(ctx: Context[System], backend: str) -> list[Row]:
    """(c) the status service alone: ``status_change_requested`` events published
    straight into its queue (pika, pipelined confirms, as fast as the broker takes
    them), timed until all are applied — its capacity with the gateway out of the way."""
    system = ctx.system(backend)
    total = ctx.sizes.backlog
    bodies = []
    for n in range(total):
        student = system.student_ids[n % len(system.student_ids)]
        # as the gateway would send it: an id it issued (time-ordered), no correlation id (the service makes one)
        request_id = request_ids.issue("benchmark", student)
        event = {"request_id": request_id, "student_id": student, "status": system.next_target(student)}
        event.update(reason="benchmark", actor="benchmark", idempotency_key=None, course=None)
        bodies.append(json.dumps(event).encode())
    after_seq = system.last_seq()
    meter = system.meter()
    meter.start()
    publisher = PipelinedPublisher(
        brokers.nodes(system.amqp_uri)[0], bodies, ctx.sizes.raw_window, "gateway.events", EVENT
    )
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
