"""Scenario (s): autoscaling, against a real slow dependency (an SMTP server taking 200 ms a mail).

The whole system runs as ``make run`` runs it on PostgreSQL (every service under ``tools.launch``),
twice: every service fixed at one instance, then with certificates and notifications autoscaled
``1..4`` (``make run``'s default on PostgreSQL). Each run: N students created, then one bulk job of
2N rows takes each through ``active`` to ``completed`` — N course completions, three mails a
student (two status mails and the certificate, PDF attached). Measured: the time from the job's
submission until every mail is sent (drain), the notifications instance-count timeline, and the
notifications launcher's own CPU while idle (one instance, nothing to do) over 30 s. Every mail is
counted at the SMTP server by Message-ID: a duplicate or a missing one fails the scenario.

``python -m benchmarks.autoscale smtp PORT SECONDS FILE``: the slow SMTP server (a child process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path

import requests
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from benchmarks.core import Context, Row
from benchmarks.cpu import CpuMeter
from benchmarks.infra import PYTHON, Cleanup, free_port, start_process
from gateway.access import store
from services.credentials import generate_signing_key
from services.infra.db import build_engine
from tools.launch import PROCESSES
from tools.migrate import HISTORIES, upgrade

MODULES = PROCESSES
LAUNCH = ["-m", "tools.launch", "--config", "config.yaml"]
SMTP_SECONDS = 0.2
IDLE_SECONDS = 30.0
DRAIN_TIMEOUT = 900.0
MAILS_PER_COMPLETION = 3  # active, completed, the certificate
SCALED = ("certificates", "notifications")


def run(ctx: Context, backend: str) -> list[Row]:
    completions = ctx.sizes.scale_completions
    rows = []
    for label, scale in (("fixed 1 instance", "1..1"), ("autoscaled 1..4", "1..4")):
        result = _drain(ctx, completions, scale)
        mails = result["mails"]
        notes = f"drain {result['seconds']:.1f} s; instances {result['timeline']}"
        if "idle_cpu" in result:
            notes += (
                f"; launcher idle CPU {result['idle_cpu']:.2f}% of a core over {IDLE_SECONDS:g} s"
                f" (the rest of the machine meanwhile: {result['idle_other']:.0f}%)"
            )
        print(f"  {label}: {notes}")
        rows.append(
            Row("s", f"ours: {completions} course completions, 200 ms SMTP, {label}", backend, None,
                mails / result["seconds"], mails, notes=notes)
        )  # fmt: skip
    fixed, scaled = rows[0].ops, rows[1].ops
    rows[1].notes += f"; {scaled / fixed:.1f}x the fixed instance's rate"
    return rows


def _drain(ctx: Context, completions: int, scale: str) -> dict:
    cleanup = Cleanup()
    try:
        return _measure(ctx, cleanup, completions, scale)
    finally:
        cleanup.close()


def _measure(ctx: Context, cleanup: Cleanup, completions: int, scale: str) -> dict:
    log_dir = ctx.workdir / f"autoscale-{scale}"
    log_dir.mkdir(parents=True, exist_ok=True)
    # PostgreSQL for the two scaled services (several instances need it); SQLite for the others,
    # which keeps this run within a shared server's connection slots
    uris = {s: f"sqlite:///{log_dir}/{s}.db" for s in MODULES}
    uris.update({s: ctx.postgres.create_database(cleanup, f"mensageria_bench_scale_{s}") for s in SCALED})
    upgrade({"DB_URIS": {HISTORIES[s]: uri for s, uri in uris.items()}}, services=tuple(uris))
    engines = {s: build_engine(uri, pool_size=1) for s, uri in uris.items()}
    for engine in engines.values():
        cleanup.push("dispose engine", engine.dispose)
    received = log_dir / "received"
    smtp_port, port, metrics_port, launcher_port = free_port(), free_port(), free_port(), free_port()
    smtp = subprocess.Popen(
        [PYTHON, "-m", "benchmarks.autoscale", "smtp", str(smtp_port), str(SMTP_SECONDS), str(received)],
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.push("stop the SMTP server", lambda: (smtp.terminate(), smtp.wait()))
    smtp.stdout.readline()  # "ready"
    api_key_secret = secrets.token_urlsafe(32)
    _, api_key = store.create_key(
        sessionmaker(bind=engines["gateway"]), api_key_secret, "benchmark", ["admin"], rate_per_second=1e6, burst=10**6
    )
    key_path = log_dir / "certificate-signing-key.pem"
    if not key_path.exists():
        generate_signing_key(key_path, bits=2048)
    env = {
        **os.environ,
        "AMQP_URI": ctx.broker.create_vhost(cleanup, "scale"),
        **{f"{s.upper()}_DB_URI": uri for s, uri in uris.items()},
        "GATEWAY_ADDRESS": f"127.0.0.1:{port}",
        "REQUEST_ID_SECRET": secrets.token_urlsafe(32),
        "API_KEY_SECRET": api_key_secret,
        "CERTIFICATE_SIGNING_KEY": str(key_path),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "RABBIT_API_URI": ctx.broker.api_uri,
        **{f"SCALE_{s.upper()}": scale for s in SCALED},
        "MAX_WORKERS": "4",  # four instances of two services within a shared PostgreSQL's connection slots
        "RPC_TIMEOUT": "15",
        **{f"METRICS_PORT_{s.upper()}": "0" for s in MODULES},
        "METRICS_PORT_NOTIFICATIONS": str(metrics_port),  # its pending mails: part of its backlog
        **{f"METRICS_PORT_LAUNCH_{s.upper()}": "0" for s in MODULES if s != "gateway"},
        "METRICS_PORT_LAUNCH_NOTIFICATIONS": str(launcher_port),
        "PYTHONWARNINGS": "ignore",
        "PYTHONUNBUFFERED": "1",
    }
    launchers = {
        name: start_process(cleanup, name, [PYTHON, *LAUNCH, module], env, log_dir / f"{name}.log")
        for name, module in MODULES.items()
    }
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {api_key}"}
    _until(lambda: _ok(f"{base}/ready"), 120, "the system to be ready")
    students = _create_students(base, headers, completions)
    _until(lambda: _count(engines["status"], "SELECT count(*) FROM student_statuses") >= completions, 120, "status")
    csv = "student_id,status,reason\n" + "".join(f"{s},active,bench\n{s},completed,bench\n" for s in students)
    started = time.monotonic()
    response = requests.post(
        f"{base}/status-requests/bulk", data=csv.encode(), headers={**headers, "Content-Type": "text/csv"}, timeout=60
    )
    response.raise_for_status()
    expected, timeline, last = MAILS_PER_COMPLETION * completions, [], None
    sql = "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FROM notifications"
    while True:
        now = time.monotonic() - started
        count = _instances(launcher_port) if scale != "1..1" else 1
        if count is not None and count != last:
            timeline.append(f"{now:.0f}s:{count}")
            last = count
        try:
            with engines["notifications"].connect() as connection:
                sent, total = connection.execute(text(sql)).one()
        except OperationalError:  # a shared server's connection slots all taken for a moment: look again
            sent, total = 0, 1
        if sent >= expected and sent == total:
            break
        if now > DRAIN_TIMEOUT:
            raise RuntimeError(f"{sent}/{expected} mails sent after {DRAIN_TIMEOUT:g}s (logs: {log_dir})")
        time.sleep(0.5)
    seconds = time.monotonic() - started
    result = {"seconds": seconds, "mails": sent, "timeline": " ".join(timeline)}
    if scale != "1..1":
        _until(lambda: _instances(launcher_port) == 1, 120, "notifications back to one instance")
        result["timeline"] += f" {time.monotonic() - started:.0f}s:1"
        meter = CpuMeter({"launcher": lambda: [launchers["notifications"].pid]})
        meter.start()
        time.sleep(IDLE_SECONDS)
        usage = meter.stop()
        result["idle_cpu"], result["idle_other"] = usage["launcher"], usage["other"]
    ids = _message_ids(received)
    if len(ids) != len(set(ids)) or len(ids) != sent:
        raise RuntimeError(f"{len(ids)} mails received, {len(set(ids))} different, {sent} sent (logs: {log_dir})")
    return result


def _create_students(base: str, headers: dict, count: int) -> list[int]:
    tag = os.urandom(4).hex()

    def create(n: int) -> int:
        body = {"name": f"Student {n}", "email": f"s{n}-{tag}@example.org", "course": "Bench"}
        response = requests.post(f"{base}/students", json=body, headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(create, range(count)))


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:g}s for {what}")
        time.sleep(0.2)


def _ok(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=5).status_code == 200
    return False


def _count(engine, sql: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(text(sql))


def _instances(port: int) -> int | None:
    with contextlib.suppress(requests.RequestException):
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        found = re.search(r'^mensageria_scale_instances\{service="notifications"\} (\S+)$', body, re.M)
        return int(float(found[1])) if found else None
    return None


def _message_ids(received: Path) -> list[str]:
    chunks = [chunk for chunk in received.read_bytes().split(b"\0") if chunk] if received.exists() else []
    return [message_from_bytes(chunk)["Message-ID"] for chunk in chunks]


def smtp(port: int, seconds: float, path: str) -> None:
    """An SMTP server that takes ``seconds`` to accept each mail; writes each mail's headers to ``path``."""
    from aiosmtpd.controller import Controller  # a benchmark dependency, only in this child

    class Slow:
        async def handle_DATA(self, server, session, envelope):
            await asyncio.sleep(seconds)
            with open(path, "ab") as received:
                head = envelope.original_content.split(b"\r\n\r\n", 1)[0]
                received.write(head.replace(b"\r\n", b"\n") + b"\0")
            return "250 Message accepted for delivery"

    controller = Controller(Slow(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


if __name__ == "__main__" and sys.argv[1:2] == ["smtp"]:
    smtp(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
