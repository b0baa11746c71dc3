"""A service's cold start: from ``python -m tools.launch services.<name>`` to its first RPC answer.

    .venv/bin/python -m benchmarks.cold_start [--services students,status] [--runs 5]

What an RPC caller waits for when a service scaled to zero starts again (the reason every
service with RPC methods keeps ``minReplicaCount: 1`` in ``deploy/kubernetes``). Each run gets a
fresh vhost and migrated SQLite databases (the migration is not timed: on Kubernetes it ran
before), starts the supervisor, and calls ``<service>.ping`` through the pika client: while
``rpc-<service>`` is not bound yet the request is unroutable (``UnknownService``) and is sent
again 20 ms later; once it is routable the call waits in the queue for the consumer. Prints
min / median / max seconds per service and the resident memory of the supervisor and its
``nameko run`` after the first answer (what the Deployments' memory requests start from).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.infra import PYTHON, Broker, Cleanup, start_process, wait_for_child
from clients import RpcClient, UnknownService
from services.credentials import generate_signing_key
from tools.migrate import HISTORIES, upgrade

SERVICES = ("students", "status", "certificates", "notifications")
DEADLINE = 120.0  # seconds a start may take before the run fails
RETRY = 0.02


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def first_answer(amqp_uri: str, service: str, started: float) -> float:
    with RpcClient(amqp_uri, timeout=DEADLINE) as client:
        while time.monotonic() - started < DEADLINE:
            try:
                client.call(service, "ping")
                return time.monotonic() - started
            except UnknownService:  # rpc-<service> not bound yet
                time.sleep(RETRY)
    raise RuntimeError(f"{service} did not answer within {DEADLINE:.0f}s")


def one_run(broker: Broker, service: str, workdir: Path) -> tuple[float, float]:
    cleanup = Cleanup()
    try:
        amqp_uri = broker.create_vhost(cleanup, f"cold_{service}")
        db_uri = f"sqlite:///{workdir}/{service}.db"
        upgrade({"DB_URIS": {HISTORIES[service]: db_uri}}, services=(service,))
        key = workdir / "signing-key.pem"
        if not key.exists():
            generate_signing_key(key)
        env = {
            **os.environ,
            "AMQP_URI": amqp_uri,
            f"{service.upper()}_DB_URI": db_uri,
            f"METRICS_PORT_{service.upper()}": "0",  # several runs side by side must not clash
            "CERTIFICATE_SIGNING_KEY": str(key),
            "PYTHONWARNINGS": "ignore",
        }
        command = [PYTHON, "-m", "tools.launch", "--config", "config.yaml", f"services.{service}"]
        started = time.monotonic()
        launcher = start_process(cleanup, service, command, env, workdir / f"{service}.log")
        seconds = first_answer(amqp_uri, service, started)
        # the pod's memory: the supervisor and its nameko run
        return seconds, resident_mib(launcher.pid) + resident_mib(wait_for_child(launcher.pid))
    finally:
        cleanup.close()
        for database in workdir.glob("*.db"):
            database.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default=",".join(SERVICES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument(
        "--rabbit-api-uri", default=os.environ.get("RABBIT_API_URI", "http://guest:guest@localhost:15672")
    )
    args = parser.parse_args()
    services = [s for s in args.services.split(",") if s]
    unknown = sorted(set(services) - set(SERVICES))
    if unknown or args.runs < 1:
        parser.error(f"--services: one or more of {', '.join(SERVICES)}; --runs: at least 1")
    broker = Broker(args.amqp_uri, args.rabbit_api_uri)
    broker.check()
    print(
        f"cold start: launch to first RPC answer, {args.runs} runs each (nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.2f})"
    )
    print("| service | min s | median s | max s | RSS of launch + nameko run, MiB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="mensageria-cold-") as directory:
        for service in services:
            results = [one_run(broker, service, Path(directory)) for _ in range(args.runs)]
            seconds = [s for s, _ in results]
            rss = max(r for _, r in results)
            print(
                f"| {service} | {min(seconds):.2f} | {statistics.median(seconds):.2f} | {max(seconds):.2f} "
                f"| {rss:.0f} |",
                flush=True,
            )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
