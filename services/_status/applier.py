"""The status service's applier: a background greenthread that applies pending
status requests in batches and then publishes their events from the outbox.

Both ways in (the ``request_status_change`` RPC and the gateway's
``status_change_requested`` event) only record a request as pending and wake the
applier, so every request follows one path, in arrival order per student, with
one transaction per batch. Requests left pending by a crashed process are picked
up by the next poll.

Each request's outcome is logged under its correlation id (rejections at INFO, the rest
at DEBUG).

Students the status service has not heard of yet (their ``student_created``
event is still on its way) are resolved by asking the students service over
RPC, with a timeout; while it cannot answer, their requests stay pending.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider
from prometheus_client.core import Metric

from services._status import batches, gauges, repo
from services._status.models import StatusOutbox
from services.exceptions import BackendTimeout, ServiceUnavailable
from services.infra import metrics, tracing
from services.infra.background import STOP_GRACE, BackgroundLoop, Loop
from services.infra.correlation import working_on
from services.infra.outbox import OutboxRelay
from services.infra.rpc import TimedServiceProxy
from services.infra.settings import Settings

log = logging.getLogger(__name__)

BACKLOG_RESOLVE_INTERVAL = 5.0  # seconds between unknown-student checks while batches are full


class StudentDirectory:
    """Asks the students service whether students exist, through ``students``
    (a :class:`TimedServiceProxy`: every call has the configured deadline)."""

    def __init__(self, students: TimedServiceProxy, timeout: float):
        self.students = students
        self.timeout = timeout

    def lookup(self, student_ids: set[int]) -> dict[int, bool]:
        """``{id: exists}`` for the ids the students service answered about."""
        try:
            existing = {s["id"] for s in self.students.get_students(sorted(student_ids))}
        except (BackendTimeout, ServiceUnavailable) as exc:
            log.warning("students service unavailable (%s); %d students stay pending", exc, len(student_ids))
            return {}
        return {student_id: student_id in existing for student_id in student_ids}

    def resolve_emails(self, emails: list[str]) -> dict[str, int]:
        """``{email: id}`` of the students these e-mails belong to (raises if the service is away)."""
        try:
            return self.students.resolve_student_emails(emails)
        except BackendTimeout as exc:
            raise ServiceUnavailable("The students service is unavailable.", {"reason": str(exc)}) from None


class RecentResults(DependencyProvider):
    """Results kept for ``max_age`` seconds per key, so that many callers asking
    the same question at once cost one query: ``cache.get(key, compute)``."""

    def __init__(self, max_age: float):
        self.max_age = max_age

    def setup(self) -> None:
        self.results: dict[str, tuple[float, Any]] = {}

    def get_dependency(self, worker_ctx: Any) -> RecentResults:
        return self

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        cached = self.results.get(key)
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        if len(self.results) > 1000:
            self.results = {k: v for k, v in self.results.items() if now - v[0] < self.max_age}
        result = compute()
        self.results[key] = (now, result)
        return result


class RelayThread(Loop):
    """The outbox relay in a greenthread of its own: a batch's events are published and confirmed
    while the applier applies the next batch (a transaction never spans a publish, so the two never
    hold the database at once). Woken after every commit, and every ``poll_interval`` for rows left
    by a predecessor; a failed flush is retried with backoff (the rows wait in the outbox)."""

    def __init__(self, relay: OutboxRelay, poll_interval: float):
        self.relay = relay
        self.poll_interval = poll_interval

    def step(self) -> bool:
        self.relay.flush()
        return False

    def end(self, grace: float = STOP_GRACE) -> bool:
        """Let the flush in hand finish, then publish what the last batches left (within ``grace``)."""
        deadline = time.monotonic() + grace
        if super().end(grace):
            with eventlet.Timeout(max(deadline - time.monotonic(), 0.001), False):
                self.relay.flush()  # only once the loop has ended: two flushes at once would publish twice
                return True
        log.warning("the outbox was not published within %.0fs of stopping; it is published at the next start", grace)
        return False


class StatusApplier(BackgroundLoop):
    """Worker interface: ``recorded()`` after recording pending requests, ``wake()`` after
    anything else that may let requests apply (a student now known)."""

    poll_interval = 0.5

    def __init__(self, db_attr: str = "db", students_attr: str = "students"):
        self.db_attr = db_attr
        self.students_attr = students_attr

    def start(self) -> None:
        config = self.container.config
        db = self.sibling(self.db_attr)
        self.Session = db.Session
        self.relay = OutboxRelay(db.Session, StatusOutbox, config, self.container.service_name)
        students = self.sibling(self.students_attr)
        self.directory = StudentDirectory(students.background(), students.timeout)
        self.resolve_after = 0.0
        self.resolve_interval = self.poll_interval
        self.backlog = False
        # events in messages the consumers take, whatever their MAX_MESSAGE_BYTES
        settings = Settings.from_config(config)
        self.batch_size = settings.status_batch_size
        self.message_bytes = min(batches.MESSAGE_BYTES, settings.max_message_bytes // 2)
        self.publisher = RelayThread(self.relay, self.poll_interval)
        self.publisher.begin(self.container.spawn_managed_thread)
        super().start()

    def stop(self) -> None:
        super().stop()  # the batch in hand is committed first
        try:
            self.publisher.end(STOP_GRACE)
        except Exception:  # broker away: the events wait in the outbox for the next start
            log.exception("publishing the outbox while stopping failed; it is published at the next start")

    def kill(self) -> None:
        super().kill()
        self.publisher.kill()

    def get_dependency(self, worker_ctx: Any) -> StatusApplier:
        return self

    def recorded(self) -> None:
        """Wake after recording pending requests: students of theirs it does not know are asked
        about within a poll interval."""
        self.resolve_interval = self.poll_interval
        self.resolve_after = min(self.resolve_after, time.monotonic() + self.poll_interval)
        self.wake()

    def step(self) -> bool:
        return self.run_once().handled >= self.batch_size

    def run_once(self) -> batches.BatchResult:
        """Resolve unknown students, apply one batch, publish its events."""
        if time.monotonic() >= self.resolve_after:
            with self.Session() as session:
                unknown = batches.due_unknown_students(session, self.batch_size)
            # the query reads every pending request: once per poll interval after requests were
            # recorded, then less and less often while none come (a bulk job's upload, 35-50 ms a
            # query at 100,000 rows) or while a backlog is applied in full batches
            if unknown:
                self.resolve_interval = self.poll_interval
            interval = BACKLOG_RESOLVE_INTERVAL if self.backlog else self.resolve_interval
            self.resolve_after = time.monotonic() + interval
            self.resolve_interval = min(self.resolve_interval * 2, BACKLOG_RESOLVE_INTERVAL)
            if unknown:
                self._resolve(unknown)
        result = None
        try:
            with self.Session.begin() as session:
                result = batches.apply_pending(session, self.batch_size, message_bytes=self.message_bytes)
        except Exception as exc:  # rolled back: applied by a later batch, under new spans
            tracing.end(result.spans if result is not None else (), exc)
            raise
        tracing.end(result.spans)  # committed
        self.backlog = result.handled >= self.batch_size
        _log_outcomes(result)
        _count(result)
        if result.events:
            self.publisher.wake()  # this batch's events, confirmed while the next is applied
        return result

    def _resolve(self, student_ids: set[int]) -> None:
        answers = self.directory.lookup(student_ids)
        if len(answers) < len(student_ids):  # students service away: ask again later
            self.resolve_after = time.monotonic() + self.directory.timeout
        rejected = 0
        with self.Session.begin() as session:
            for student_id, exists in answers.items():
                if exists:
                    repo.ensure_student(session, student_id)
                else:
                    rejected += batches.reject_unknown(session, student_id)
        metrics.STATUS_REJECTED.inc(rejected)

    def collect_metrics(self) -> list[Metric]:
        """The backlog, the running jobs and the outbox, for ``/metrics``."""
        return [*gauges.read(self.Session), *self.relay.gauges(self.container.service_name)]


def _count(result: batches.BatchResult) -> None:
    if result.handled:
        metrics.STATUS_APPLIED.inc(result.applied + result.noops)
        metrics.STATUS_REJECTED.inc(result.rejected)
        metrics.STATUS_BATCH_SIZE.observe(result.handled)


def _log_outcomes(result: batches.BatchResult) -> None:
    """One line per request, under its correlation id: rejections at INFO, the rest at DEBUG."""
    debug = log.isEnabledFor(logging.DEBUG)
    for request, outcome in result.outcomes:
        if outcome["state"] != repo.REJECTED and not debug:
            continue
        with working_on(request.correlation_id, "background status.applier"):
            if outcome["state"] == repo.REJECTED:
                log.info(
                    "status request %s (student %d, to %s) rejected: %s %s",
                    request.id,
                    request.student_id,
                    request.target_status,
                    outcome["error_code"],
                    outcome["error_message"],
                )
            else:
                log.debug(
                    "status request %s (student %d) applied: %s to %s",
                    request.id,
                    request.student_id,
                    outcome["from_status"],
                    request.target_status,
                )
