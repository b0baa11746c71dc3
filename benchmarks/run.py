"""Run every benchmark in one go on one broker; print one table and append it to results.csv.

Results go to ``benchmarks/results/results.csv``.

    .venv/bin/python -m benchmarks.run            # default sizes, ~6 minutes
    .venv/bin/python -m benchmarks.run --quick    # a smoke run, well under a minute
    .venv/bin/python -m benchmarks.run --only c --backends sqlite --profile /tmp/prof

A scenario is one function ``(ctx, backend) -> list[Row]`` registered in
:data:`SCENARIOS`; the runner does the rest (ordering, ratios, table, CSV,
cleanup).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import (
    autoscale,
    brokers,
    bulk,
    celery_bench,
    celery_seed,
    console,
    queue_cost,
    raw_pika,
    reads,
    seed_workload,
    tracing_cost,
    writes,
)
from benchmarks.core import BACKENDS, NO_BACKEND, POSTGRESQL, Context, Row, Scenario, Sizes, plan
from benchmarks.cpu import machine_busy_percent, wait_quiet
from benchmarks.infra import Broker, Cleanup, Postgres, add_postgres_argument
from benchmarks.report import RESULTS, add_ratios, append_csv, machine_info, table
from benchmarks.system import System

SCENARIOS: list[Scenario] = [
    Scenario("a", "raw pika: publish with confirms → consume with acks", raw_pika.run),
    Scenario("b", "Celery: one task per status update", celery_bench.run, BACKENDS),
    Scenario("c", "ours: POST /students/{id}/status, accepted and applied", writes.status_changes, BACKENDS, True),
    Scenario("c", "ours: the status service alone, from a queued backlog", writes.status_backlog, BACKENDS, True),
    Scenario("d", "ours: bulk job of 100,000 rows", bulk.bulk_job, BACKENDS, True),
    Scenario("e", "ours: GET /students/{id}, and the same read over RPC", reads.reads, BACKENDS, True),
    Scenario("e", "bare nameko RPC echo", reads.echo),
    Scenario("f", "Celery: the seed's three tasks per course completion", celery_seed.run, BACKENDS),
    Scenario("f", "ours: course completions, POST /api/v1/certificate/", seed_workload.completions, BACKENDS, True),
    # last of the system's scenarios: it leaves a million more requests behind
    Scenario("o", "ours: the operations console with a long history", console.console_pages, BACKENDS, True),
    Scenario("t", "traces: CPU of the tracing hooks per status change", tracing_cost.run),
    Scenario("s", "autoscaling: a burst of course completions, 200 ms SMTP", autoscale.run, (POSTGRESQL,)),
    # on nodes of its own, once per broker set-up (--brokers)
    Scenario("q", "queue cost at rest: memory, disk, publish and consume", queue_cost.queue_cost, per_setup=True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default="", help="scenario letters to run, e.g. 'a,c' (default: all)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgresql (default: both)")
    d = Sizes()
    sizes = parser.add_argument_group("sizes (defaults: the full run; --quick makes them small)")
    sizes.add_argument("--raw-messages", type=int, help=f"(a) messages (default {d.raw_messages:,})")
    sizes.add_argument("--raw-window", type=int, help=f"(a) unconfirmed publishes in flight (default {d.raw_window:,})")
    sizes.add_argument("--celery-tasks", type=int, help=f"(b) tasks per backend (default {d.celery_tasks:,})")
    sizes.add_argument("--students", type=int, help=f"(b, c, e) students (default {d.students:,})")
    sizes.add_argument("--concurrency", help=f"(c) client counts (default {_csv(d.concurrency)})")
    sizes.add_argument("--status-requests", help=f"(c) requests per client count (default {_csv(d.status_requests)})")
    sizes.add_argument("--backlog", type=int, help=f"(c) events queued for the status service (default {d.backlog:,})")
    sizes.add_argument("--bulk-rows", type=int, help=f"(d) rows of the bulk job (default {d.bulk_rows:,})")
    sizes.add_argument("--bulk-max-rows", type=int, help="(d) the gateway's BULK_MAX_ROWS (default: --bulk-rows)")
    sizes.add_argument("--completions", type=int, help=f"(f) course completions (default {d.completions:,})")
    sizes.add_argument("--reads", type=int, help=f"(e) GETs and RPC reads (default {d.reads:,})")
    sizes.add_argument("--read-concurrency", type=int, help=f"(e) clients (default {d.read_concurrency})")
    sizes.add_argument("--echo-calls", type=int, help=f"(e) echo calls (default {d.echo_calls:,})")
    sizes.add_argument("--trace-changes", type=int, help=f"(t) status changes per set-up (default {d.trace_changes:,})")
    sizes.add_argument("--console-requests", type=int, help=f"(o) requests written (default {d.console_requests:,})")
    sizes.add_argument(
        "--console-dead-letters", type=int, help=f"(o) dead letters parked (default {d.console_dead_letters:,})"
    )
    sizes.add_argument("--console-gets", type=int, help=f"(o) GETs per page (default {d.console_gets})")
    sizes.add_argument("--queue-messages", type=int, help=f"(q) messages at rest (default {d.queue_messages:,})")
    sizes.add_argument("--console-streams", type=int, help=f"(o) live pages held open (default {d.console_streams})")
    sizes.add_argument(
        "--gateway-processes",
        type=int,
        help=f"GATEWAY_PROCESSES of the system the scenarios run against (default {d.gateway_processes})",
    )
    parser.add_argument(
        "--brokers",
        default=brokers.DEFAULT,
        help=f"broker set-ups to run the system's scenarios (c, d, e, o) and (q) on, e.g. 'classic,quorum,cluster': "
        f"{', '.join(brokers.SETUPS)} (default {brokers.DEFAULT}; 'cluster' starts three RabbitMQ nodes of the "
        "run's own, which needs root and the rabbitmq-server package)",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the services during (c) at top concurrency")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait up to this long for the machine to be idle (shared machines)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="CSV to append to")
    parser.add_argument("--no-csv", action="store_true", help="print only")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and SQLite files")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI"), help="the broker (its vhost is ignored)")
    parser.add_argument(
        "--rabbit-api-uri", default=os.environ.get("RABBIT_API_URI", "http://guest:guest@localhost:15672")
    )
    add_postgres_argument(parser)
    return parser.parse_args(argv)


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def _broker_root(uri: str | None) -> str:
    """The broker without its vhost: every scenario makes a vhost of its own on it."""
    parts = urlsplit(uri or "amqp://guest:guest@localhost:5672/")
    return f"{parts.scheme}://{parts.netloc}/"


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())


def build_sizes(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    names = (
        "raw_messages",
        "raw_window",
        "celery_tasks",
        "students",
        "backlog",
        "bulk_rows",
        "bulk_max_rows",
        "completions",
        "reads",
        "read_concurrency",
        "echo_calls",
        "trace_changes",
        "console_requests",
        "console_dead_letters",
        "console_gets",
        "console_streams",
        "queue_messages",
    )
    for name in names:
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    if args.concurrency:
        sizes.concurrency = _ints(args.concurrency)
    if args.status_requests:
        sizes.status_requests = _ints(args.status_requests)
    if len(sizes.status_requests) != len(sizes.concurrency):
        counts = sizes.status_requests
        sizes.status_requests = tuple(counts[min(i, len(counts) - 1)] for i in range(len(sizes.concurrency)))
    return sizes


def run_label(args: argparse.Namespace, sizes: Sizes) -> str:
    """``full`` or ``quick``, then whatever this run left out or resized (``full; only c;
    concurrency 64``): results.csv tells a partial run from a whole one."""
    parts = ["quick" if args.quick else "full"]
    if args.only:
        parts.append(f"only {args.only}")
    if args.backends != ",".join(BACKENDS):
        parts.append(f"backends {args.backends}")
    if args.brokers != brokers.DEFAULT:
        parts.append(f"brokers {args.brokers}")
    base = Sizes.quick() if args.quick else Sizes()
    for size in fields(Sizes):
        value = getattr(sizes, size.name)
        if value != getattr(base, size.name):
            parts.append(f"{size.name} {_csv(value) if isinstance(value, tuple) else value}")
    return "; ".join(parts)


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = build_sizes(args)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        sys.exit(f"unknown backends: {sorted(unknown)}; choose from {BACKENDS}")
    only = {letter.strip() for letter in args.only.split(",") if letter.strip()}
    try:
        setup_names = brokers.parse(args.brokers)
    except ValueError as exc:
        sys.exit(f"--brokers: {exc}")
    label_setups = setup_names != (brokers.DEFAULT,)  # rows say which set-up they ran on

    cleanup = Cleanup()
    atexit.register(cleanup.close)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="mensageria-bench-"))
    if not args.keep_workdir:
        cleanup.push(f"remove {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    broker = Broker(_broker_root(args.amqp_uri), args.rabbit_api_uri)
    postgres = Postgres(args.postgres_uri)
    setups = brokers.BrokerSetups(broker, cleanup)
    ctx = Context(broker, postgres, sizes, cleanup, workdir, System.start, args.profile, args.profile_seconds)

    rows: list[Row] = []
    failed: list[str] = []
    began = time.monotonic()
    try:
        broker.check()
        if any(b != "sqlite" for b in backends):
            postgres.check()
        busy = machine_busy_percent(2.0)
        print(f"machine busy before the run: {busy:.0f}% of one core (others' work skews every figure)")
        for scenario, backend, setup in plan(SCENARIOS, only, backends, setup_names):
            if setup is not None and (ctx.broker_setup is None or ctx.broker_setup.name != setup):
                ctx.close_system()  # the next system runs on the next set-up
                ctx.broker_setup = setups.get(setup)
            on = "" if setup is None or not label_setups else f" on {brokers.LABELS[setup]}"
            label = scenario.name + ("" if backend == NO_BACKEND else f" [{backend}]") + on
            if args.wait_quiet:
                busy = wait_quiet(args.wait_quiet)
                print(f"  machine busy {busy:.0f}% of one core before this scenario")
            print(f"({scenario.key}) {label} ...", flush=True)
            started = time.monotonic()
            try:
                measured = scenario.run(ctx, backend)
                if scenario.needs_system and label_setups:
                    for row in measured:
                        row.backend = f"{row.backend}/{ctx.broker_setup.label}"
                rows += measured
            except Exception:  # report it, measure the rest
                traceback.print_exc()
                failed.append(label)
                continue
            print(f"    done in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        ctx.close_system()
        cleanup.close()
    add_ratios(rows)
    print()
    print(table(rows))
    print("\nnotes:")
    for row in rows:
        print(f"  ({row.key}) {row.scenario} [{row.backend}, {row.concurrency or '-'}]: {row.notes}")
    print(f"\n{len(rows)} rows in {time.monotonic() - began:.0f}s; machine {machine_info()}")
    if not args.no_csv:
        append_csv(args.results, rows, run_label(args, sizes))
        print(f"appended to {args.results}")
    if failed:
        print(f"FAILED: {'; '.join(failed)} (logs: rerun with --keep-workdir)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
