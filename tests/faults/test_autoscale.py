"""Autoscaling under a burst, with a real slow dependency: an SMTP server that takes 200 ms per mail.

The system runs as ``make run`` runs it (each service under ``tools.launch``), on PostgreSQL, with
``SCALE_NOTIFICATIONS=1..4`` and a short keep-alive. 400 course completions: notifications grows
from one instance to four, every mail is sent exactly once (by Message-ID), and it returns to one."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import requests
from sqlalchemy import text

from services.infra.db import build_engine
from tests.e2e.support import free_port, poll
from tests.faults.support import Workload

KEEP_ALIVE = 5.0
SMTP_SECONDS = 0.2
COMPLETIONS = 400

SLOW_SMTP = """
import asyncio, sys
from aiosmtpd.controller import Controller

port, path, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])


class Slow:
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(seconds)  # a slow server: each mail takes this long to accept
        with open(path, "ab") as received:  # one line per mail accepted: its Message-ID header
            received.write(envelope.original_content.split(b"\\r\\n\\r\\n", 1)[0].replace(b"\\r\\n", b"\\n") + b"\\0")
        return "250 Message accepted for delivery"


controller = Controller(Slow(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"""


def start_slow_smtp(port: int, received: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_SMTP, str(port), str(received), str(SMTP_SECONDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def received_message_ids(received: Path) -> list[str]:
    if not received.exists():
        return []
    headers = [chunk for chunk in received.read_bytes().split(b"\0") if chunk]
    return [message_from_bytes(header)["Message-ID"] for header in headers]


def instances(port: int) -> int | None:
    """What the notifications launcher says it runs, from its /metrics."""
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    found = re.search(r'^mensageria_scale_instances\{service="notifications"\} (\S+)$', body, re.M)
    return int(float(found[1])) if found else None


def test_a_burst_scales_notifications_to_four_and_back_to_one(make_system, rabbit_manager, unique, tmp_path, request):
    received = tmp_path / "received"
    smtp = start_slow_smtp(smtp_port := free_port(), received)
    launcher_port = free_port()
    try:
        system = make_system(
            "postgresql",
            supervised=True,
            SCALE_NOTIFICATIONS="1..4",
            SCALE_CERTIFICATES="1..4",  # as make run on PostgreSQL: PDFs for the certificates' mails
            SCALE_KEEP_ALIVE=f"{KEEP_ALIVE:g}",
            RABBIT_API_URI=request.config.getoption("RABBIT_API_URI"),
            METRICS_PORT_LAUNCH_NOTIFICATIONS=str(launcher_port),
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(smtp_port),
            # four instances of ten workers' connections each overflow a shared PostgreSQL; and the
            # burst keeps certificates (PDFs for every mail) busy beyond the tests' 2 s RPC timeout
            MAX_WORKERS="4",
            RPC_TIMEOUT="15",
        )
        assert poll(lambda: instances(launcher_port), lambda n: n is not None) == 1

        workload = Workload(system)
        workload.create_students(COMPLETIONS, unique)
        burst = time.monotonic()
        job = workload.submit_job(rows_per_student=2, rounds=("active", "completed"))
        poll(lambda: instances(launcher_port), lambda n: n == 4, timeout=60)
        grown = time.monotonic() - burst
        consumers = poll(  # four processes consume, not just four started
            lambda: rabbit_manager.get_queue(system.vhost, "rpc-notifications").get("consumers", 0),
            lambda count: count == 4,
            timeout=60,
        )

        engine = build_engine(system.db_uris["notifications:NotificationsBase"])
        try:

            def mail_log() -> dict:
                with engine.connect() as connection:
                    rows = connection.execute(text("SELECT state, message_id FROM notifications")).all()
                return {"states": {state for state, _ in rows}, "ids": [message_id for _, message_id in rows]}

            # three mails per student (active, completed, the certificate) once the job is applied
            log = poll(mail_log, lambda m: m["states"] == {"sent"} and len(m["ids"]) >= 3 * COMPLETIONS, timeout=300)
        finally:
            engine.dispose()
        drained = time.monotonic() - burst
        poll(lambda: instances(launcher_port), lambda n: n == 1, timeout=KEEP_ALIVE + 60)
        shrunk = time.monotonic() - burst - drained

        ids = received_message_ids(received)
        assert len(ids) == len(set(ids)), "a mail was sent twice"
        assert set(ids) == set(log["ids"]), "a mail recorded was not received, or one received was not recorded"
        assert workload.job(job["job_id"])["applied"] == 2 * COMPLETIONS
        launch_log = system.log_path("notifications").read_text()
        assert "scale service=notifications from=1 to=4" in launch_log, launch_log[-3000:]
        assert re.search(r"scale service=notifications from=\d to=1 .* reason=keep_alive_lower", launch_log)
        assert "killing it" not in launch_log  # every instance retired stopped by itself, its work done
        assert all(process.poll() is None for process in system.processes.values()), system.log_tails()
        launcher = system.processes["notifications"]
        launcher.terminate()  # as Ctrl-C / SIGTERM of make run: every instance stops gracefully
        assert launcher.wait(timeout=60) == 0, system.log_tails()
        print(
            f"\nAUTOSCALE {len(ids)} mails; 4 instances ({consumers} consumers) {grown:.1f}s after the burst, "
            f"drained in {drained:.1f}s, back to 1 instance {shrunk:.1f}s later"
        )
    finally:
        smtp.stdin.close()
        smtp.wait(timeout=10)
