"""Scenario (o): the operations console with a large history, and what a live page costs.

On the running system (after (c) to (e)), the status database gets 1,000,000 more status requests
(applied and rejected ones, spread over 30 days, each with a correlation id of its own; written
straight into the table in chunks, as a long-lived installation would have them) and
``status.dead-letters`` gets 100,000 parked messages. Then one signed-in client asks for each
console page ``--console-gets`` times in a row, and the table gives each page's p50 and p99 (p95 in
the notes): the requests list (newest, by correlation id, by student, by state, by a day's time range,
20 pages deep), a request's page, and the dead letters of status (the first 100, and filtered by error
text, which looks through the first 10,000).

The live view: ``--console-streams`` pages hold ``GET /ops/live`` open for 30 s; the gateway's CPU
then, less its CPU over 30 s with none open, divided by the number of pages, is what one open page
costs (the target: ≤ 2 % of a core).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pika
import requests
from sqlalchemy import column, insert, table, text

from benchmarks.core import Context, Row, percentile
from benchmarks.cpu import CpuMeter
from benchmarks.system import System
from services.infra.queues import dead_letter_arguments
from services.infra.settings import Settings

CHUNK = 20_000
REQUEST_COLUMNS = (
    "id",
    "student_id",
    "target_status",
    "reason",
    "actor",
    "state",
    "from_status",
    "error_code",
    "error_message",
    "attempts",
    "correlation_id",
    "created_at",
    "updated_at",
)
STREAM_SECONDS = 30.0
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_pages(ctx: Context[System], backend: str) -> list[Row]:
    system = ctx.system(backend)
    started = time.monotonic()
    correlation_ids = seed_requests(system, ctx.sizes.console_requests)
    print(f"  {ctx.sizes.console_requests:,} status requests written in {time.monotonic() - started:.0f}s")
    started = time.monotonic()
    seed_dead_letters(system, ctx.sizes.console_dead_letters)
    print(f"  {ctx.sizes.console_dead_letters:,} dead letters parked in {time.monotonic() - started:.0f}s")
    session = sign_in(system)
    gets = ctx.sizes.console_gets
    rng = random.Random(7)
    day = (datetime.now(UTC) - timedelta(days=14)).replace(hour=0, minute=0, second=0, microsecond=0)
    newest = session.get(f"{system.base_url}/ops/requests", timeout=30)
    request_id = re.search(r'href="/ops/requests/([0-9a-f-]{36})"', newest.text).group(1)
    pages = {
        "requests, newest 50": lambda: "/ops/requests",
        "requests by correlation id": lambda: f"/ops/requests?correlation_id={rng.choice(correlation_ids)}",
        "requests by student": lambda: f"/ops/requests?student_id={rng.choice(system.student_ids)}",
        "requests by state (rejected)": lambda: "/ops/requests?state=rejected",
        "requests in a day's range": lambda: (
            f"/ops/requests?since={day:%Y-%m-%dT%H:%M}&until={day + timedelta(days=1):%Y-%m-%dT%H:%M}"
        ),
        "a request's page": lambda: f"/ops/requests/{request_id}",
        "dead letters, first 100": lambda: "/ops/dead-letters/status",
        "dead letters by error text": lambda: "/ops/dead-letters/status?error=bench-needle",
    }
    rows = []
    for name, path in pages.items():
        rows.append(_timed(system, session, backend, name, [path() for _ in range(gets)]))
    rows.append(_deep_pages(system, session, backend, 20))
    rows.append(_live_cost(ctx, system, backend))
    return rows


def _timed(system: System, session: requests.Session, backend: str, name: str, paths: list[str]) -> Row:
    durations = []
    began = time.monotonic()
    for path in paths:
        started = time.perf_counter()
        response = session.get(system.base_url + path, timeout=60)
        durations.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    elapsed = time.monotonic() - began
    durations.sort()
    p95 = percentile(durations, 0.95)
    return Row(
        "o",
        f"console: {name}",
        backend,
        1,
        len(paths) / elapsed,
        len(paths),
        percentile(durations, 0.50),
        percentile(durations, 0.99),
        notes=f"p95 {p95:.0f} ms over {len(paths)} GETs; {'within' if p95 <= 300 else 'over'} the 300 ms target",
    )


def _deep_pages(system: System, session: requests.Session, backend: str, depth: int) -> Row:
    """Follow ``Older requests`` ``depth`` times from the newest page: every page timed."""
    path, paths = "/ops/requests?state=applied", []
    for _ in range(depth):
        paths.append(path)
        page = session.get(system.base_url + path, timeout=60)
        found = re.search(r'href="(/ops/requests\?[^"]*cursor=[^"]+)" rel="next"', page.text)
        if not found:
            break
        path = found.group(1).replace("&amp;", "&")
    return _timed(system, session, backend, f"requests, {len(paths)} pages deep", paths)


def _live_cost(ctx: Context[System], system: System, backend: str) -> Row:
    meter = CpuMeter({"gateway": lambda: [system.pids["gateway"]]})
    meter.start()
    time.sleep(STREAM_SECONDS)
    idle = meter.stop()["gateway"]
    count = ctx.sizes.console_streams
    stop = threading.Event()
    received = [0] * count
    cookies = sign_in(system).cookies

    def hold(index: int) -> None:
        with requests.get(f"{system.base_url}/ops/live", cookies=cookies, stream=True, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith(b"event: "):
                    received[index] += 1
                if stop.is_set():
                    return

    threads = [threading.Thread(target=hold, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # connected, their history sent
    meter.start()
    time.sleep(STREAM_SECONDS)
    busy = meter.stop()["gateway"]
    stop.set()
    per_page = max(busy - idle, 0.0) / count
    return Row(
        "o",
        "console: one open live page (SSE)",
        backend,
        count,
        sum(received) / (STREAM_SECONDS + 2),
        sum(received),
        notes=(
            f"gateway {busy:.2f}% of a core with {count} pages open, {idle:.2f}% with none: "
            f"{per_page:.3f}% per page (target ≤ 2%); {min(received)} to {max(received)} events per page"
        ),
    )


def sign_in(system: System) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{system.base_url}/ops/login", timeout=30)
    token = CSRF.search(form.text).group(1)
    answer = session.post(
        f"{system.base_url}/ops/login", data={"key": system.api_key, "csrf": token}, allow_redirects=False, timeout=30
    )
    if answer.status_code != 303:
        raise RuntimeError(f"console sign-in: {answer.status_code} {answer.text[:300]}")
    return session


def seed_requests(system: System, count: int) -> list[str]:
    """``count`` settled requests (19 applied to 1 rejected), over the last 30 days; their correlation ids."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    correlation_ids = []
    requests_table = table("status_requests", *(column(name) for name in REQUEST_COLUMNS))
    for start in range(0, count, CHUNK):
        rows = []
        for n in range(start, min(start + CHUNK, count)):
            # stored as the services store them: naive UTC (services.infra.models.UTCDateTime)
            when = (now - timedelta(seconds=(count - n) * 30 * 86400 / count)).replace(tzinfo=None)
            rejected = n % 20 == 0
            correlation_id = f"bench-{tag}-{n}"
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "student_id": rng.choice(system.student_ids),
                    "target_status": "active",
                    "reason": "history",
                    "actor": "benchmark",
                    "state": "rejected" if rejected else "applied",
                    "from_status": "enrolled",
                    "error_code": "INVALID_TRANSITION" if rejected else None,
                    "error_message": "cannot" if rejected else None,
                    "attempts": 1,
                    "correlation_id": correlation_id,
                    "created_at": when,
                    "updated_at": when,
                }
            )
            if n % 997 == 0:
                correlation_ids.append(correlation_id)
        with system.engines["status"].begin() as connection:
            connection.execute(insert(requests_table), rows)
    if system.engines["status"].dialect.name == "postgresql":
        # as autovacuum would have by now in an installation that grew this history: without fresh
        # statistics the planner walks a bitmap of 950,000 applied rows for a keyset page (270 ms, not 2 ms)
        with system.engines["status"].connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE status_requests"))
    return correlation_ids


def seed_dead_letters(system: System, count: int) -> None:
    """``count`` messages in status.dead-letters, parked as the retrying handler parks them."""
    connection = pika.BlockingConnection(pika.URLParameters(system.amqp_uri))
    channel = connection.channel()
    queue = "status.dead-letters"
    # as the services declare it: QUEUE_TYPE comes from the environment, as config.yaml reads it
    settings = Settings.from_config({"QUEUE_TYPE": os.environ.get("QUEUE_TYPE")})
    channel.queue_declare(queue, durable=True, arguments=dead_letter_arguments(settings))
    for n in range(count):
        headers = {
            "x-mensageria-original-exchange": "gateway.events",
            "x-mensageria-original-routing-key": "status_change_requested",
            "x-mensageria-queue": "evt-gateway-status_change_requested--status.handle_status_change_requested",
            "x-mensageria-handler": "status.handle_status_change_requested",
            "x-mensageria-attempt": 5,
            "x-mensageria-error": "OperationalError: database is locked" + (" bench-needle" if n % 1000 == 0 else ""),
            "x-mensageria-failed-at": datetime.now(UTC).isoformat(),
        }
        body = b'{"requests": []}'
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2, headers=headers, message_id=str(uuid.uuid4())
        )
        channel.basic_publish("", queue, body, properties)
    deadline = time.monotonic() + 120
    while channel.queue_declare(queue, passive=True).method.message_count < count:
        if time.monotonic() > deadline:
            raise RuntimeError("dead letters not all parked within 120 s")
        time.sleep(0.2)
    connection.close()
