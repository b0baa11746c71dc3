"""Scenario (f): the seed's own workload — course completions through ``POST /api/v1/certificate/``.

On the running :class:`System`, with certificates and notifications started beside it
(:meth:`System.start_more`) and their mail going over SMTP to a real local server
(:mod:`benchmarks.smtp_sink`). Each completion is one ``POST /api/v1/certificate/`` for a new
student (16 clients): the gateway creates the student, activates it, queues ``completed``; then
the certificate is issued (a signed credential; the PDF rendered for the mail) and three mails
go out — "active", "completed" and the certificate's, with the PDF and the credential attached.
Completions/s from the first POST until the sink has received the last of those mails.

Beside it, (c) at 16 clients (``POST /students/{id}/status`` of the system's own students),
alone and then while a second round of completions runs: certificates and mail must not hold
status changes up.

Last, the notifications service alone: ``--backlog`` status events of one change each (as the
status service publishes a lone change), put straight into its queue (pika, pipelined confirms,
as fast as the broker takes them), timed until every mail is recorded — how fast it catches up
after an outage or a burst.
"""

from __future__ import annotations

import json
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from benchmarks.core import Context, Row
from benchmarks.cpu import format_cpu
from benchmarks.load import Call, LoadResult
from benchmarks.memory import format_rss
from benchmarks.raw_pika import PipelinedPublisher
from benchmarks.smtp_sink import SmtpSink
from benchmarks.system import System
from services.infra import brokers

CLIENTS = 16
# the handlers' queues: events published before they exist would be dropped
SUBSCRIPTIONS = (
    "evt-status-student_status_changed--certificates.handle_student_status_changed",
    "evt-status-student_status_changed--notifications.handle_student_status_changed",
    "evt-certificates-certificate_issued--notifications.handle_certificate_issued",
)
MAILS_PER_COMPLETION = 3  # "active", "completed", and the certificate's
ISSUED = "SELECT count(*) FROM certificates WHERE student_email LIKE :pattern AND credential IS NOT NULL"
RECORDED = "SELECT count(*) FROM notifications WHERE correlation_id = :tag"


@dataclass
class Round:
    """One round of completions: the POSTs, and when the last mail arrived."""

    posts: LoadResult
    last_mail: float
    notes: str

    @property
    def rate(self) -> float:
        return self.posts.ok / (self.last_mail - self.posts.started)


def completions(ctx: Context[System], backend: str) -> list[Row]:
    """(f) completions end to end, and (c) at 16 clients alone and beside them."""
    system = ctx.system(backend)
    sink = SmtpSink.start(system.cleanup, system.log_dir / "smtp")
    mail_env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_STARTTLS": "false"}
    for queue in SUBSCRIPTIONS:  # the earlier scenarios' events wait there (status declares them): not (f)'s work
        ctx.broker.purge(system.amqp_uri, queue)
    system.start_more(ctx, mail_env, lambda: _subscribed(ctx, system))
    count = ctx.sizes.completions
    status_requests = dict(zip(ctx.sizes.concurrency, ctx.sizes.status_requests, strict=True))
    status_total = status_requests.get(CLIENTS, max(ctx.sizes.status_requests))

    alone = _status_changes(system, status_total)
    first = _completions(system, sink, count)
    with ThreadPoolExecutor(1) as pool:
        beside = pool.submit(_completions, system, sink, count)
        during = _status_changes(system, status_total)
        second = beside.result()
    overlap = _overlap(during, second)
    print(
        f"  {count:,} completions: {first.rate:,.1f}/s alone, {second.rate:,.1f}/s beside (c); "
        f"(c) at {CLIENTS}: {alone.rate:,.0f} accepted/s alone, {during.rate:,.0f} beside"
    )
    first_row = Row("f", "course completion: first POST → last mail received", backend, CLIENTS, first.rate, count)
    first_row.notes = first.notes
    return [
        _post_row(backend, first.posts, "POST /api/v1/certificate/ → 202", ""),
        first_row,
        _post_row(backend, alone, "POST /students/{id}/status → 202, (c) alone", ""),
        _post_row(backend, during, "POST /students/{id}/status → 202, (c) while (f) runs", overlap),
        Row("f", "course completion while (c) runs", backend, CLIENTS, second.rate, count, notes=second.notes),
        _mail_backlog(ctx, system, backend),
    ]


def _mail_backlog(ctx: Context[System], system: System, backend: str) -> Row:
    """The notifications service alone: status events queued straight into its queue, timed until
    every mail is recorded (their sending goes on after)."""
    total, tag = ctx.sizes.backlog, f"bench-{secrets.token_hex(6)}"  # the mails' correlation id
    occurred_at = datetime.now(UTC).isoformat()
    bodies = []
    for n in range(total):
        student = system.student_ids[n % len(system.student_ids)]
        change = {"student_id": student, "from_status": "active", "to_status": "suspended", "version": 1}
        change.update(reason="benchmark", actor="benchmark", request_id=str(uuid.uuid4()), course=None)
        change.update(occurred_at=occurred_at, correlation_id=tag)
        bodies.append(json.dumps(change).encode())
    meter = system.meter()
    meter.start()
    queue = SUBSCRIPTIONS[1]  # notifications' own: the other subscribers of status events see none of these
    publisher = PipelinedPublisher(brokers.nodes(system.amqp_uri)[0], bodies, ctx.sizes.raw_window, "", queue)
    publisher.run()
    recorded = system._poll(lambda: system._scalar("notifications", RECORDED, tag=tag) >= total, "the mails recorded")
    cpu = meter.stop()
    rate = total / (recorded - publisher.started)
    queued = publisher.finished - publisher.started
    print(f"  notifications alone: {total:,} queued status events recorded as mails at {rate:,.0f}/s")
    notes = f"all {total:,} queued in {queued:.2f}s; {format_cpu(cpu, rate)}"
    scenario = "notifications alone: queued status events → mails recorded"
    return Row("f", scenario, backend, None, rate, total, notes=notes)


def _subscribed(ctx: Context, system: System) -> bool:
    consumers = ctx.broker.consumers(system.amqp_uri)
    return all(consumers.get(queue, 0) > 0 for queue in SUBSCRIPTIONS)


def _post_row(backend: str, result: LoadResult, scenario: str, notes: str) -> Row:
    failures = result.failures()
    notes = (f"not accepted: {failures}; " if failures else "") + notes
    return Row(
        "f",
        scenario,
        backend,
        CLIENTS,
        result.rate,
        result.ok,
        result.percentile_ms(0.50),
        result.percentile_ms(0.99),
        notes=notes,
    )


def _status_changes(system: System, total: int) -> LoadResult:
    """(c) at ``CLIENTS`` clients: every change accepted, then applied."""
    after_seq = system.last_seq()
    result = system.load(system.status_plans(CLIENTS, total), 202)
    system.wait_settled(after_seq, result.ok)
    return result


def _completions(system: System, sink: SmtpSink, count: int) -> Round:
    tag = secrets.token_hex(4)  # in every address of this round: its mails are told apart by it
    bodies = [{"name": f"Graduate {n}", "email": f"g{n}-{tag}@example.org", "course": "Bench"} for n in range(count)]
    calls = [Call("POST", "/api/v1/certificate/", body) for body in bodies]
    meter, rss = system.meter(), system.rss_meter()
    meter.groups["client"] = lambda: [*system.process_groups()["client"](), sink.pid]  # the sink: the client's
    rss.start()
    meter.start()
    posts = system.load([calls[i::CLIENTS] for i in range(CLIENTS)], 202)
    if posts.ok != count:
        raise RuntimeError(f"{count:,} completions: {posts.ok:,} accepted ({posts.failures()})")
    last_mail = sink.wait_for(tag, MAILS_PER_COMPLETION * count, system.check_alive)
    cpu, peaks = meter.stop(), rss.stop()
    received = sink.received(tag)
    issued = system._scalar("certificates", ISSUED, pattern=f"%-{tag}@example.org")
    if (issued, received.with_pdf) != (count, count):
        raise RuntimeError(
            f"{count:,} completions: {issued:,} certificates issued, {received.with_pdf:,} mails with the PDF; "
            f"logs in {system.log_dir}"
        )
    rate = count / (last_mail - posts.started)
    notes = (
        f"POSTs {posts.finished - posts.started:.2f}s, last mail {last_mail - posts.finished:.2f}s after the last 202; "
        f"{issued:,} certificates issued (signed credential), {received.mails:,} mails received "
        f"({received.with_pdf:,} with the PDF, {received.bytes / received.mails / 1024:.0f} KiB a mail on average); "
        f"{format_cpu(cpu, rate)}; {format_rss(peaks)}"
    )
    return Round(posts, last_mail, notes)


def _overlap(during: LoadResult, round_: Round) -> str:
    """How much of (c)'s run the completions were still in flight."""
    start, end = max(during.started, round_.posts.started), min(during.finished, round_.last_mail)
    share = max(0.0, end - start) / max(during.finished - during.started, 1e-9)
    return (
        f"(c) ran {during.finished - during.started:.2f}s from {during.started - round_.posts.started:+.2f}s of the "
        f"completions' {round_.last_mail - round_.posts.started:.2f}s; {share:.0%} of it while they were in flight"
    )
