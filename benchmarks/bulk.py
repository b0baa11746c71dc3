"""Scenario (d): one bulk status job, ``POST /status-requests/bulk`` of 100,000 rows.

The CSV body (``student_id,status,reason``) is generated while it is sent:
``requests`` streams it from a generator (chunked transfer encoding, 1,000 rows
a chunk), so the client never holds the whole body. Every row is a valid change:
row ``n`` is for student ``n mod S`` of the system's ``S`` students, each student
alternating active/suspended from its current status in row order, so the job
measures applying, not rejecting.

Timed from the start of the upload until ``GET /jobs/{id}`` says ``done``
and the status database's ``outbox`` has no row left unpublished: every change
committed with its history row, and its ``student_status_changed`` event
confirmed by the broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import requests

from benchmarks.core import Context, Row
from benchmarks.cpu import format_cpu
from benchmarks.memory import format_rss
from benchmarks.system import System

CHUNK_ROWS = 1_000  # rows per chunk of the streamed upload
PENDING_POLL = 0.05
JOB_POLL = 0.25
# the job's oldest row still pending (0 when none is: seqs start at 1), from the applier's queue: a walk of the
# queue's key that stops at its first row, cheap however many rows are pending (a count of them,
# polled 20 times a second, took a share of the database server the applier was waiting for)
FIRST_PENDING = "SELECT seq FROM status_pending WHERE job_id = :job ORDER BY seq LIMIT 1"
OUTBOX_POLL = 0.02
STALL_TIMEOUT = 120.0  # give up when nothing moves for this long (the job itself may take minutes)
UPLOAD_TIMEOUT = 600.0
# requests applies its connect timeout to every send of the body too: how long the gateway may
# leave a chunk unread (the longest wait is reported)
SEND_TIMEOUT = 120.0
READ_COPY_TIMEOUT = 900.0
UNPUBLISHED = "SELECT count(*) FROM outbox"  # a row is deleted once its message is confirmed


def csv_rows(system: System, total: int, waits: list[float]) -> Iterator[bytes]:
    """The job's CSV, ``CHUNK_ROWS`` rows at a time; records each student's new status as it goes,
    and in ``waits`` the longest time one chunk took to be sent (the gateway reading it)."""
    ids = system.student_ids
    waits.append(0.0)
    yield b"student_id,status,reason\n"
    for first in range(0, total, CHUNK_ROWS):
        lines = []
        for n in range(first, min(first + CHUNK_ROWS, total)):
            student = ids[n % len(ids)]
            lines.append(f"{student},{system.next_target(student)},bulk benchmark\n")
        handed = time.monotonic()
        yield "".join(lines).encode()
        waits[0] = max(waits[0], time.monotonic() - handed)  # resumed once requests has sent it


def _job(session: requests.Session, system: System, job_id: str) -> dict:
    """The job as ``GET /jobs/{id}`` shows it (an error answer as ``{"http": code, ...}``)."""
    response = session.get(f"{system.base_url}/jobs/{job_id}", timeout=30)
    if response.status_code != 200:
        return {"http": response.status_code, "body": response.text[:300]}
    return response.json()


def _wait(probe, finished, progress, what: str, system: System, interval: float) -> tuple[float, object]:
    """Poll ``probe()`` until ``finished(value)``; fail only when ``progress(value)``
    stays the same for ``STALL_TIMEOUT`` seconds. Returns when it finished, and the last value."""
    value = probe()
    moved = time.monotonic()
    while not finished(value):
        time.sleep(interval)
        previous, value = progress(value), probe()
        now = time.monotonic()
        if progress(value) != previous:
            moved = now
        elif now - moved > STALL_TIMEOUT:
            raise RuntimeError(f"{what}: no progress for {STALL_TIMEOUT:g}s (last {value}); logs in {system.log_dir}")
    return time.monotonic(), value


def bulk_job(ctx: Context[System], backend: str) -> list[Row]:
    """(d) one job of ``ctx.sizes.bulk_rows`` rows: upload → every row applied, its event published."""
    system = ctx.system(backend)
    total = ctx.sizes.bulk_rows
    headers = {"Content-Type": "text/csv", "Idempotency-Key": str(uuid.uuid4()), "X-Actor": "benchmark"}
    waits: list[float] = []
    body = csv_rows(system, total, waits)
    with requests.Session() as session:
        session.headers.update(system.headers)
        session.get(system.base_url + "/health", timeout=10)  # connect outside the timed window
        meter, upload_meter, rss = system.meter(), system.meter(), system.rss_meter()
        rss.start()
        meter.start()
        upload_meter.start()
        started = time.monotonic()
        url, timeout = system.base_url + "/status-requests/bulk", (SEND_TIMEOUT, UPLOAD_TIMEOUT)
        response = session.post(url, data=body, headers=headers, timeout=timeout)
        uploaded = time.monotonic()
        upload_cpu = upload_meter.stop()
        if response.status_code != 202:
            raise RuntimeError(f"upload of {total:,} rows: {response.status_code} {response.text[:500]}")
        accepted = response.json()
        job_id = accepted["job_id"]
        if accepted.get("total") != total:
            raise RuntimeError(f"job {job_id} counts {accepted.get('total')} rows, {total:,} were sent")
        print(f"  {total:,} rows uploaded in {uploaded - started:.2f}s (job {job_id})", flush=True)
        # the job's pending rows, read in the status database (the benchmark's own probe:
        # GET /jobs/{id} is counted at most once a second, too coarse for a stopwatch)
        job_done, _ = _wait(
            lambda: system._scalar("status", FIRST_PENDING, job=job_id),
            lambda first: first == 0,
            lambda first: first,
            f"job {job_id} to be done",
            system,
            PENDING_POLL,
        )
        # then the events of its last rows
        settled, _ = _wait(
            lambda: system._scalar("status", UNPUBLISHED),
            lambda unpublished: unpublished == 0,
            lambda unpublished: unpublished,
            "the status outbox to be published",
            system,
            OUTBOX_POLL,
        )
        cpu = meter.stop()
        peaks = rss.stop()
        # its final counts, outside the timed window: an answer counted before the job
        # was done (the 202's, within the last second) may still be served for up to 1 s
        _, job = _wait(
            lambda: _job(session, system, job_id),
            lambda job: "http" in job or job.get("state") == "done",
            lambda job: job.get("pending"),
            f"GET /jobs/{job_id} to say done",
            system,
            JOB_POLL,
        )
        if "http" in job:
            raise RuntimeError(f"GET /jobs/{job_id}: {job}")
    counts = {key: job.get(key) for key in ("total", "applied", "rejected", "failed", "pending")}
    if job.get("applied") != total:
        errors = job.get("errors", [])[:3]
        raise RuntimeError(f"job {job_id}: {counts}, expected all {total:,} applied; first errors {errors}")
    read_copy = system.wait_read_copy(READ_COPY_TIMEOUT)
    rate = total / (settled - started)
    print(f"  {rate:,.0f} rows/s; {counts}; {format_rss(peaks)}")
    return [
        Row(
            "d",
            "bulk job: upload → every row applied, event published",
            backend,
            1,
            rate,
            total,
            notes=(
                f"CSV streamed from a generator ({CHUNK_ROWS:,} rows a chunk) over {len(system.student_ids)} "
                f"students; upload {uploaded - started:.2f}s (to the 202; the longest a chunk waited to be "
                f"read {waits[0]:.2f}s), apply {settled - uploaded:.2f}s "
                f"(job done {job_done - uploaded:.2f}s after the 202, outbox published {settled - job_done:.2f}s "
                f"later); applied {job['applied']:,}, "
                f"rejected {job['rejected']:,}, failed {job.get('failed', 0):,}; "
                f"job's own rows_per_second {job.get('rows_per_second')}; read copy {read_copy - settled:.1f}s later; "
                f"upload {format_cpu(upload_cpu)}; whole {format_cpu(cpu, rate)}; {format_rss(peaks)} "
                "(each group's largest process, from the upload to the outbox published)"
            ),
        )
    ]
