"""status: the authority on the student status lifecycle.

RPC: request_status_change, get_status_request, get_status_history,
get_current_status, submit_job, get_job, ping; for the gateway's streamed
uploads: create_job, add_job_rows, seal_job, discard_job.
Handles: gateway.status_change_requested, students.student_created,
students.student_deleted.
Events: student_status_changed (via the outbox, after the change is committed).
"""

from __future__ import annotations

from services import jobs
from services._status import console, jobs_repo, repo
from services._status.applier import RecentResults, StatusApplier
from services._status.models import StatusBase
from services.exceptions import ValidationFailed
from services.infra import dead_letters, tracing
from services.infra.batching import Delivery, batched_event_handler
from services.infra.correlation import Correlation
from services.infra.db import Database
from services.infra.heap import LeanHeap
from services.infra.inbound import rpc
from services.infra.logs import LogContext
from services.infra.metrics import STATUS_RECORDED, Metrics
from services.infra.retry import reliable_event_handler
from services.infra.rpc import TimedRpcProxy
from services.infra.settings import SettingsProvider
from services.infra.tracing import Tracing
from services.schemas import (
    CurrentStatusSchema,
    HistoryEntrySchema,
    HistoryQuerySchema,
    JobErrorsSchema,
    JobListSchema,
    JobOptionsSchema,
    JobRowSchema,
    RequestSearchSchema,
    StatusChangeSchema,
    StatusRequestSchema,
    load,
    positive_id,
    status_change_requests,
)

request_schema = StatusRequestSchema()


# the mixin is named through its module (see services/students.py)
class StatusService(dead_letters.DeadLetterRpc):
    name = "status"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    heap = LeanHeap()  # less for the garbage collector: start-up heap frozen, no cycle per worker
    db = Database(StatusBase, session_options={"expire_on_commit": False})
    students = TimedRpcProxy("students")
    applier = StatusApplier()
    settings = SettingsProvider()
    progress_cache = RecentResults(max_age=1.0)

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @rpc
    def request_status_change(
        self,
        student_id,
        status,
        reason=None,
        actor=None,
        idempotency_key=None,
        course=None,
        on_behalf_of=None,
        correlation_id=None,
    ) -> dict:
        """Record a pending request; ``correlation_id`` None: the caller's."""
        command = load(
            StatusChangeSchema(),
            {
                "student_id": student_id,
                "status": status,
                "reason": reason,
                "actor": actor,
                "on_behalf_of": on_behalf_of,
                "idempotency_key": idempotency_key,
                "course": course,
                "correlation_id": correlation_id,
            },
        )
        request, created = repo.submit(self.db, command)
        if created:
            STATUS_RECORDED.labels("rpc").inc()
            self.applier.recorded()
        return request_schema.dump(request)

    @rpc
    def get_status_request(self, request_id: str) -> dict:
        with self.db() as session:
            return request_schema.dump(repo.get_request(session, str(request_id)))

    @rpc
    def get_status_history(self, student_id: int, limit: int = 50, cursor: str | None = None) -> dict:
        query = load(HistoryQuerySchema(), {"limit": limit, "cursor": cursor})
        with self.db() as session:
            items, next_cursor = repo.history_page(session, positive_id(student_id), **query)
            return {"items": HistoryEntrySchema(many=True).dump(items), "next_cursor": next_cursor}

    @rpc
    def get_current_status(self, student_id: int) -> dict:
        with self.db() as session:
            return CurrentStatusSchema().dump(repo.current(session, positive_id(student_id)))

    # --- operations console ---------------------------------------------------

    @rpc
    def search_status_requests(
        self,
        request_id=None,
        correlation_id=None,
        student_id=None,
        state=None,
        since=None,
        until=None,
        limit=50,
        cursor=None,
    ) -> dict:
        """Requests matching every filter given, newest first: ``{items, next_cursor}``."""
        filters = load(
            RequestSearchSchema(),
            {
                "request_id": request_id,
                "correlation_id": correlation_id,
                "student_id": student_id,
                "state": state,
                "since": since,
                "until": until,
                "limit": limit,
                "cursor": cursor,
            },
        )
        with self.db() as session:
            items, next_cursor = console.search(session, filters)
            return {"items": request_schema.dump(items, many=True), "next_cursor": next_cursor}

    @rpc
    def get_overview(self) -> dict:
        """The applier's backlog and the outbox's lag, for the console."""
        with self.db() as session:
            return console.overview(session)

    @rpc
    def list_jobs(self, limit: int = 50, before: str | None = None) -> dict:
        """Bulk jobs, newest first: ``{items: [{job_id, actor, ..., created_at, sealed_at, total}], next_before}``."""
        query = load(JobListSchema(), {"limit": limit, "before": before})
        with self.db() as session:
            jobs = jobs_repo.recent(session, query["limit"] + 1, query["before"])
        shown = jobs[: query["limit"]]
        return {
            "items": [
                {
                    "job_id": job.id,
                    "actor": job.actor,
                    "on_behalf_of": job.on_behalf_of,
                    "correlation_id": job.correlation_id,
                    "total": job.total,
                    "created_at": job.created_at.isoformat(),
                    "sealed_at": job.sealed_at.isoformat() if job.sealed_at else None,
                }
                for job in shown
            ],
            "next_before": shown[-1].created_at.isoformat() if len(jobs) > query["limit"] else None,
        }

    @rpc
    def list_job_errors(self, job_id: str, after_row: int = 0, limit: int = 1000) -> list[dict]:
        """A job's row errors after row ``after_row``, by row (``limit`` ≤ 1000): page through them all."""
        query = load(JobErrorsSchema(), {"after_row": after_row, "limit": limit})
        with self.db() as session:
            return jobs_repo.job_errors(session, str(job_id), query["after_row"], query["limit"])

    # --- bulk jobs -----------------------------------------------------------

    @rpc
    def submit_job(
        self,
        rows: list[dict],
        idempotency_key: str | None = None,
        actor: str | None = None,
        on_behalf_of: str | None = None,
        correlation_id: str | None = None,
    ) -> dict:
        """A bulk job from ``rows`` (``{student_id | email, status, reason}``), at most
        ``BULK_MAX_ROWS``; invalid rows are refused one by one, never the whole job.
        Its requests carry ``correlation_id`` (None: the caller's)."""
        options = _job_options(idempotency_key, actor, on_behalf_of, correlation_id)
        if not isinstance(rows, list):
            raise ValidationFailed("Expected a list of rows.", {"rows": ["Must be a list."]})
        max_rows = self.settings.bulk_max_rows
        if len(rows) > max_rows:
            raise ValidationFailed(f"More than {max_rows} rows.", {"rows": [f"At most {max_rows}."]})
        upload = jobs_repo.create(self.db, **options)
        if upload.created:
            accepted, refused = jobs.check_rows(rows, JobRowSchema(), self.applier.directory.resolve_emails)
            with self.db.begin() as session:
                jobs_repo.add_rows(session, upload.job_id, upload.upload, accepted, refused)
            self.seal_job(upload.job_id, upload.upload, len(rows))
        return self.get_job(upload.job_id)

    @rpc
    def get_job(self, job_id: str, errors: int = 100) -> dict:
        """Progress of a job: counts, rows/s and the first ``errors`` row errors
        (counted at most once a second per job: clients may poll as often as they like)."""
        shown = _errors_shown(errors)

        def count() -> dict:
            with self.db() as session:
                return jobs_repo.progress(session, str(job_id), jobs_repo.MAX_ERRORS_SHOWN)

        job = self.progress_cache.get(str(job_id), count)
        return {**job, "errors": job["errors"][:shown]}

    @rpc
    def create_job(
        self,
        idempotency_key: str | None = None,
        actor: str | None = None,
        on_behalf_of: str | None = None,
        correlation_id: str | None = None,
    ) -> dict:
        upload = jobs_repo.create(self.db, **_job_options(idempotency_key, actor, on_behalf_of, correlation_id))
        return {"job_id": upload.job_id, "upload": upload.upload, "created": upload.created}

    @rpc
    def add_job_rows(self, job_id: str, upload: str, rows: list[list], errors: list[list]) -> int:
        with self.db.begin() as session:
            return jobs_repo.add_rows(session, job_id, upload, rows, errors)

    @rpc
    def seal_job(self, job_id: str, upload: str, total: int) -> dict:
        with self.db.begin() as session:
            jobs_repo.seal(session, job_id, upload, total)
        STATUS_RECORDED.labels("job").inc(total)  # from now on its rows are the applier's
        self.applier.recorded()
        return {"job_id": job_id, "total": total}

    @rpc
    def discard_job(self, job_id: str, upload: str) -> None:
        with self.db.begin() as session:
            jobs_repo.discard(session, job_id, upload)

    # --- events --------------------------------------------------------------

    @batched_event_handler("gateway", "status_change_requested")
    def handle_status_change_requested(self, deliveries: list[Delivery]) -> None:
        """Many messages in one transaction; one invalid fails the batch, then alone is parked."""
        commands = [c for d in deliveries for c in d.stamped(status_change_requests(d.payload))]
        with tracing.adopted(commands, "record status change"):  # each request in its own trace
            repo.submit_many(self.db, commands)
        STATUS_RECORDED.labels("event").inc(len(commands))  # a redelivered message counts again
        self.applier.recorded()  # a redelivered message wakes it for nothing, harmlessly

    @reliable_event_handler("students", "student_created")
    def handle_student_created(self, payload: dict) -> None:
        student_id = _event_student_id(payload, "student")
        with self.db.begin() as session:
            repo.ensure_student(session, student_id)
        self.applier.wake()

    @reliable_event_handler("students", "student_deleted")
    def handle_student_deleted(self, payload: dict) -> None:
        student_id = _event_student_id(payload, None)
        with self.db.begin() as session:
            repo.mark_deleted(session, student_id)


def _job_options(idempotency_key: object, actor: object, on_behalf_of: object, correlation_id: object) -> dict:
    """Checked as a single request's are: they are copied onto every request of the job."""
    options = {
        "idempotency_key": idempotency_key,
        "actor": actor,
        "on_behalf_of": on_behalf_of,
        "correlation_id": correlation_id,
    }
    return load(JobOptionsSchema(), options)


def _errors_shown(value: object) -> int:
    top = jobs_repo.MAX_ERRORS_SHOWN
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValidationFailed("Invalid errors count.", {"errors": [f"Must be an integer from 0 to {top}."]})
    return value


def _event_student_id(payload: dict, key: str | None) -> int:
    try:
        return positive_id(payload[key]["id"] if key else payload["student_id"])
    except (KeyError, TypeError):
        raise ValidationFailed("Event without a student id.", {"student_id": ["Missing."]}) from None
