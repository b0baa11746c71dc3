"""Scenario (t): what traces cost, in CPU per status change.

At 64 clients a status change passes six tracing hooks on its way through the gateway, status
and students services: the gateway's SERVER span (with the caller's ``traceparent`` read) and
PRODUCER span (its ``traceparent`` put in the payload and the headers), the status worker's
CONSUMER span for the message, the ``record status change`` span of an item of another trace,
``apply status change``, and the students' ``handle`` span. This scenario runs those six hooks
through :mod:`services.infra.tracing` in a child process shaped like a service (eventlet
monkey-patched), N times, and divides the child's CPU (every thread: the batch span processor's
export included) by N, for three set-ups:

- traces off (no ``OTEL_EXPORTER_OTLP_ENDPOINT``): the hooks' first-line returns;
- on, every trace sampled, exported over OTLP/HTTP protobuf to a sink in another process;
- on, 10 % sampled (``parentbased_traceidratio``, 0.1): what a busy installation would run.

The end-to-end effect is visible in (c) with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, but this
machine's noise between runs (±15 %) is larger than the effect; this isolates it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.core import Context, Row

HOOKS = 6
MODES = (
    ("off", {}),
    ("on, all sampled", {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
    ("on, 10% sampled", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
)


def run(ctx: Context, backend: str) -> list[Row]:
    changes = ctx.sizes.trace_changes
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.tracing_cost", "sink"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(sink.stdout.readline())
        baseline = None
        rows = []
        for mode, env in MODES:
            child_env = {**os.environ, **env}
            child_env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
            if mode != "off":
                child_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.tracing_cost", "child", str(changes)],
                env=child_env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            seen = json.loads(result.stdout.splitlines()[-1])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                exported = int(response.read())
            per_change_us = seen["cpu_seconds"] / changes * 1e6
            baseline = per_change_us if baseline is None else baseline
            extra = "" if mode == "off" else f"; +{per_change_us - baseline:.1f} µs over off"
            rows.append(
                Row(
                    "t",
                    f"traces {mode}: {HOOKS} hooks of a status change",
                    backend,
                    None,
                    changes / seen["cpu_seconds"],
                    changes,
                    notes=(
                        f"{per_change_us:.1f} µs CPU per status change, {per_change_us / HOOKS:.1f} µs per hook"
                        f"{extra}; {exported / changes:.0f} bytes exported per change"
                    ),
                )
            )
        return rows
    finally:
        sink.terminate()
        sink.wait(10)


# --- child processes ------------------------------------------------------------


def _sink() -> None:
    """An OTLP/HTTP endpoint that takes every export and answers 200; ``GET`` says how many bytes came."""

    received = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            received[0] += len(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # the bytes received since the last GET
            body, received[0] = str(received[0]).encode(), 0
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _child(changes: int) -> None:
    import eventlet

    eventlet.monkey_patch()  # as every service process is
    from opentelemetry import trace

    from services.infra import tracing

    tracing.configure("bench")
    incoming: dict = {}  # most callers send no traceparent: the sampler decides at the gateway
    attributes = {"http.request.method": "POST", "http.route": "/students/{student_id}/status", "url.path": "/s/1"}
    messaging = {"messaging.system": "rabbitmq", "messaging.destination.name": "gateway.events"}

    def status_change(n: int) -> None:
        # gateway: the request's span, then the publish (payload and headers carry it)
        server = tracing.start(
            "POST /students/{student_id}/status",
            tracing.SERVER,
            parent=tracing.extract(incoming) if tracing.enabled() else None,
            attributes=attributes if tracing.enabled() else None,
        )
        with tracing.span("publish gateway.events", tracing.PRODUCER, parent=None, attributes=messaging) as span:
            payload = {"request_id": n, **(tracing.carrier_of(span) if span is not None else {})}
            tracing.amqp_headers(span)
        tracing.end([server])
        # status: the message's CONSUMER span; the item, of another trace, recorded and applied
        with tracing.span("process gateway.status_change_requested", tracing.CONSUMER, attributes=messaging):
            items = [dict(payload)]
            with tracing.adopted(items, "record status change"):
                pass
        apply = tracing.start("apply status change", parent=items[0].get("traceparent"))
        change = {"traceparent": tracing.traceparent_of(apply) if apply is not None else None}
        tracing.end([apply])
        # students: the change handled in its own trace
        with (
            tracing.span("process status.student_status_changed", tracing.CONSUMER, attributes=messaging),
            tracing.item(change, "handle status.student_status_changed"),
        ):
            pass

    def run(count: int) -> None:
        for n in range(count):
            status_change(n)
            if n % 20 == 0:  # a service yields to its hub on every I/O: the exporter runs between requests
                eventlet.sleep(0)

    run(min(1000, changes))  # warm up
    if tracing.enabled():
        trace.get_tracer_provider().force_flush()
    started = time.process_time()
    run(changes)
    if tracing.enabled():
        trace.get_tracer_provider().force_flush()
    cpu = time.process_time() - started
    print(json.dumps({"cpu_seconds": cpu}))


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        _sink()
    else:
        _child(int(sys.argv[2]))
