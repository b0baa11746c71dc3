"""The console's pages (``ConsoleRoutes``, a mixin of ``GatewayService``).

Reading needs ``ops:read``; acting needs ``ops:write``. Every page works without JavaScript:
filters are GET forms, actions POST forms carrying the CSRF token.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import eventlet
from eventlet.queue import Empty
from werkzeug.wrappers import Request, Response

from gateway.access import keys as api_keys
from gateway.access import store
from gateway.console import launchers, queues, sessions
from gateway.console.entrypoint import PUBLIC, error_page, page, redirect, render
from gateway.console.pulse import END, SAMPLE_SECONDS, event
from gateway.exceptions import AccessDenied, RateLimited
from services.exceptions import (
    CertificateNotFound,
    JobNotFound,
    NotificationNotFound,
    ServiceError,
    StatusRequestNotFound,
    StudentNotFound,
    ValidationFailed,
)

SERVICES = ("students", "status", "certificates", "notifications")
KEEP_ALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream
RECHECK_SECONDS = 30.0  # how often a stream checks that its key is still good
JOB_SECONDS = 1.0  # a job page's progress, this often until the job is done
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
REQUEST_FILTERS = ("request_id", "correlation_id", "student_id", "state", "since", "until")
STATES = ("pending", "applied", "rejected", "failed")


class ConsoleRoutes:
    """Uses ``GatewayService``'s ``access`` (the gate), ``settings`` and the RPC proxies."""

    # --- signing in and out -----------------------------------------------------

    @page("GET", "/ops/login", scope=PUBLIC)
    def console_login_form(self, request: Request) -> Response:
        if request.console_session is not None:
            return redirect(_next(request.args.get("next")))
        return _login_form(request, _next(request.args.get("next")))

    @page("POST", "/ops/login", scope=PUBLIC)
    def console_login(self, request: Request) -> Response:
        console = request.console
        target = _next(request.form.get("next"))
        nonce = sessions.login_nonce(request.cookies.get(sessions.LOGIN_COOKIE))
        if not sessions.csrf_ok(console.secret, nonce, request.form.get("csrf")):
            return _login_form(request, target, "The sign-in form expired. Try again.", 400)
        key = (request.form.get("key") or "").strip()
        try:
            principal, _ = self.access.admit(f"Bearer {key}", "ops:read")
        except AccessDenied as exc:
            request.principal = exc.principal  # the audit trail names a known key that was refused
            return _login_form(request, target, _refused(exc), 429 if isinstance(exc, RateLimited) else 401)
        request.principal = principal
        cookie, _ = sessions.issue(console.secret, principal.key_id, console.lifetime)
        response = redirect(target)
        response.set_cookie(sessions.COOKIE, cookie, max_age=int(console.lifetime), **_cookie_options(request))
        response.delete_cookie(sessions.LOGIN_COOKIE, path="/ops")
        return response

    @page("POST", "/ops/logout", scope="ops:read")
    def console_logout(self, request: Request) -> Response:
        response = redirect("/ops/login")
        response.delete_cookie(sessions.COOKIE, path="/ops", **_same_site())
        return response

    # --- overview ---------------------------------------------------------------

    @page("GET", "/ops", scope="ops:read")
    def console_overview(self, request: Request) -> Response:
        return render(request, "overview.html", **self._overview())

    def _overview(self) -> dict:
        scaling = eventlet.spawn(launchers.read_all, self.settings)  # alongside the calls below
        results = self._gather(
            {
                **{f"ping:{name}": (name, "ping") for name in SERVICES},
                "status": ("status", "get_overview"),
                "mail": ("notifications", "get_overview"),
                **{f"dead:{name}": (name, "count_dead_letters") for name in SERVICES},
            }
        )
        table = self.pulse.queues()
        totals = queues.by_service(table) if table is not None else None
        return {
            "queues": table,
            "totals": totals,
            "services": [{"name": name, **results[f"ping:{name}"]} for name in SERVICES],
            "status": results["status"],
            "mail": results["mail"],
            "dead_letters": [{"name": name, **results[f"dead:{name}"]} for name in SERVICES],
            "instances": scaling.wait(),
        }

    def _gather(self, calls: dict[str, tuple]) -> dict[str, dict]:
        """Every ``(service, method, *args)`` at once, each within ``READY_TIMEOUT``: ``{name: result}``."""
        timeout = self.settings.ready_timeout
        pool = eventlet.GreenPool(len(calls))
        names = list(calls)
        answers = pool.imap(lambda name: self._try(calls[name][0], calls[name][1], timeout, *calls[name][2:]), names)
        return dict(zip(names, answers, strict=True))

    def _try(self, service: str, method: str, timeout: float, *args: Any) -> dict:
        """``{"ok": True, "value": ...}`` or ``{"ok": False, "error": "why"}``: a page shows what it can."""
        proxy = getattr(self, service)
        try:
            return {"ok": True, "value": proxy.call(method, timeout, *args)}
        except ServiceError as exc:
            return {"ok": False, "error": exc.code}

    # --- the live stream ---------------------------------------------------------------

    @page("GET", "/ops/live", scope="ops:read")
    def console_live(self, request: Request) -> Response:
        """One Server-Sent Events stream per open page: the hour so far, then every sample."""
        pulse, gate, key_id = self.pulse, self.access, request.principal.key_id
        job_id = request.args.get("job") or None
        if job_id is not None and not _UUID.fullmatch(job_id):
            return error_page(request, 422, "job is a job id (a UUID).")
        queue = pulse.subscribe()
        history = pulse.history()
        request.environ["eventlet.minimum_write_chunk_size"] = 0  # each event leaves at once

        def stream():
            try:
                yield f"retry: {int(SAMPLE_SECONDS * 1000)}\n\n"
                yield event("history", history)
                checked = time.monotonic()
                following = job_id  # a job's page: its progress every second until it is done
                while True:
                    try:
                        item = queue.get(timeout=JOB_SECONDS if following else KEEP_ALIVE_SECONDS)
                    except Empty:
                        item = None
                    if following:
                        progress = pulse.job_progress(following)
                        if progress is not None:
                            yield event("job", progress)
                            following = None if progress["state"] == "done" else following
                    if item is END:
                        return
                    if time.monotonic() - checked > RECHECK_SECONDS:  # a revoked key's page stops updating
                        try:
                            gate.admit_key(key_id, "ops:read")
                        except AccessDenied:
                            yield event("ended", {"reason": "Your session has ended. Sign in again."})
                            return
                        checked = time.monotonic()
                    if item is not None:
                        yield event("sample", item)
                    elif not following:
                        yield ": keep-alive\n\n"
            finally:
                pulse.unsubscribe(queue)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return Response(stream(), mimetype="text/event-stream", headers=headers)

    # --- requests -----------------------------------------------------------------

    @page("GET", "/ops/requests", scope="ops:read")
    def console_requests(self, request: Request) -> Response:
        filters = {name: (request.args.get(name) or "").strip() for name in REQUEST_FILTERS}
        context = {"filters": filters, "states": STATES, "items": [], "next_url": None, "error": None}
        query = {name: value for name, value in filters.items() if value}
        try:
            if query.get("student_id"):
                query["student_id"] = _positive(query["student_id"], "student_id")
            for name in ("since", "until"):
                if name in query:
                    query[name] = _moment(query[name], name)
            found = self.status.search_status_requests(**query, cursor=request.args.get("cursor") or None)
        except ValidationFailed as exc:
            context["error"] = _invalid(exc)
            return render(request, "requests.html", http_status=422, **context)
        context["items"] = found["items"]
        if found["next_cursor"]:
            context["next_url"] = "/ops/requests?" + urlencode({**_given(filters), "cursor": found["next_cursor"]})
        return render(request, "requests.html", **context)

    @page("GET", "/ops/requests/<uuid:request_id>", scope="ops:read")
    def console_request(self, request: Request, request_id: str) -> Response:
        try:
            found = self.status.get_status_request(request_id)
        except StatusRequestNotFound:
            return error_page(request, 404, f"No status request {request_id}.")
        path = self._path_of(found)
        return render(request, "request.html", item=found, **path)

    def _path_of(self, found: dict) -> dict:
        """What followed a request: the student's history entry, its certificate, its mails."""
        student_id = found["student_id"]
        found_now = self._gather(
            {
                "history": ("status", "get_status_history", student_id, 200),
                "certificates": ("certificates", "list_certificates", student_id),
                "mails": ("notifications", "list_notifications", student_id, None, 200),
            }
        )
        history, certificates, mails = found_now["history"], found_now["certificates"], found_now["mails"]
        request_id, correlation_id = found["request_id"], found.get("correlation_id")
        return {
            "history": _keep(history, lambda value: [h for h in value["items"] if h["request_id"] == request_id]),
            "certificates": _keep(
                certificates,
                lambda value: [c for c in value if correlation_id and c.get("correlation_id") == correlation_id],
            ),
            "mails": _keep(
                mails,
                lambda value: [m for m in value["items"] if correlation_id and m["correlation_id"] == correlation_id],
            ),
        }

    # --- students -------------------------------------------------------------------------

    @page("GET", "/ops/students", scope="ops:read")
    def console_students(self, request: Request) -> Response:
        """Find a student by id, e-mail or the start of the name."""
        q = (request.args.get("q") or "").strip()
        context: dict[str, Any] = {"q": q, "items": [], "error": None, "next_url": None}
        if not q:
            return render(request, "students.html", **context)
        try:
            if q.isdigit():
                return redirect(f"/ops/students/{_positive(q, 'id')}")
            if "@" in q:
                return redirect(f"/ops/students/{self.students.get_student_by_email(q)['id']}")
            found = self.students.list_students(name=q, limit=50, cursor=request.args.get("cursor") or None)
        except StudentNotFound:
            context["error"] = f"No student with the e-mail {q}."
            return render(request, "students.html", http_status=404, **context)
        except ValidationFailed as exc:
            context["error"] = _invalid(exc)
            return render(request, "students.html", http_status=422, **context)
        context["items"] = found["items"]
        if found["next_cursor"]:
            context["next_url"] = "/ops/students?" + urlencode({"q": q, "cursor": found["next_cursor"]})
        return render(request, "students.html", **context)

    @page("GET", "/ops/students/<id:student_id>", scope="ops:read")
    def console_student(self, request: Request, student_id: int) -> Response:
        try:
            student = self.students.get_student(student_id)
        except StudentNotFound:
            return error_page(request, 404, f"No student {student_id}.")
        found = self._gather(
            {
                "history": ("status", "get_status_history", student_id, 200),
                "requests": ("status", "search_status_requests", None, None, student_id, None, None, None, 20),
                "certificates": ("certificates", "list_certificates", student_id),
                "mails": ("notifications", "list_notifications", student_id, None, 50),
            }
        )
        return render(request, "student.html", student=student, **found)

    # --- certificates and mail ------------------------------------------------------------

    @page("GET", "/ops/certificates", scope="ops:read")
    def console_certificates(self, request: Request) -> Response:
        code = (request.args.get("code") or "").strip()
        context: dict[str, Any] = {"code": code, "certificate": None, "error": None}
        if code:
            try:
                context["certificate"] = self.certificates.get_certificate(code)
            except (CertificateNotFound, ValidationFailed):
                context["error"] = f"No certificate with the code {code}."
                return render(request, "certificates.html", http_status=404, **context)
        return render(request, "certificates.html", **context)

    @page("POST", "/ops/certificates/<code:code>/revocation", scope="ops:write")
    def console_revoke_certificate(self, request: Request, code: str) -> Response:
        reason = (request.form.get("reason") or "").strip()
        try:
            certificate = self.certificates.revoke_certificate(code, reason)
        except CertificateNotFound:
            return error_page(request, 404, f"No certificate with the code {code}.")
        except ValidationFailed:
            context = {"code": code, "certificate": self.certificates.get_certificate(code)}
            context["error"] = "Give a reason (1 to 1000 characters): it is shown to whoever verifies the certificate."
            return render(request, "certificates.html", http_status=422, **context)
        return render(request, "certificates.html", code=code, certificate=certificate, error=None, revoked=True)

    @page("GET", "/ops/mail", scope="ops:read")
    def console_mail(self, request: Request) -> Response:
        state = request.args.get("state") or "failed"
        if state not in ("pending", "sent", "failed"):
            return error_page(request, 422, "state is pending, sent or failed.")
        found = self.notifications.list_notifications(state=state, limit=50, cursor=request.args.get("cursor") or None)
        next_url = (
            f"/ops/mail?{urlencode({'state': state, 'cursor': found['next_cursor']})}" if found["next_cursor"] else None
        )
        return render(request, "mail.html", state=state, items=found["items"], next_url=next_url, message=None)

    @page("POST", "/ops/mail/<id:notification_id>/resend", scope="ops:write")
    def console_resend(self, request: Request, notification_id: int) -> Response:
        try:
            resent = self.notifications.resend_notification(notification_id)
        except NotificationNotFound:
            return error_page(request, 404, f"No mail {notification_id}.")
        message = f"Mail {notification_id} to {resent['recipient']} is queued to be sent again."
        found = self.notifications.list_notifications(state="failed", limit=50)
        return render(request, "mail.html", state="failed", items=found["items"], next_url=None, message=message)

    # --- jobs -------------------------------------------------------------------------------

    @page("GET", "/ops/jobs", scope="ops:read")
    def console_jobs(self, request: Request) -> Response:
        before = (request.args.get("before") or "").strip() or None
        try:
            found = self.status.list_jobs(limit=50, before=before)
        except ValidationFailed as exc:
            return error_page(request, 422, _invalid(exc))
        next_url = f"/ops/jobs?{urlencode({'before': found['next_before']})}" if found["next_before"] else None
        return render(request, "jobs.html", items=found["items"], next_url=next_url)

    @page("GET", "/ops/jobs/<uuid:job_id>", scope="ops:read")
    def console_job(self, request: Request, job_id: str) -> Response:
        try:
            job = self.status.get_job(job_id, 100)
        except JobNotFound:
            return error_page(request, 404, f"No job {job_id}.")
        return render(request, "job.html", job=job)

    @page("GET", "/ops/jobs/<uuid:job_id>/errors.csv", scope="ops:read")
    def console_job_errors(self, request: Request, job_id: str) -> Response:
        try:
            first = self.status.list_job_errors(job_id, 0, 1000)
        except JobNotFound:
            return error_page(request, 404, f"No job {job_id}.")
        lines = [_csv_line(["row", "code", "message", "student_id", "status", "request_id", "details"])]
        errors = first
        while errors:  # every page now, in this worker: up to BULK_MAX_ROWS rows
            for error in errors:
                details = error.get("details") or {}
                lines.append(
                    _csv_line(
                        [
                            error["row"],
                            error["code"],
                            error["message"],
                            details.get("student_id", ""),
                            details.get("status", ""),
                            details.get("request_id", ""),
                            json.dumps(details, ensure_ascii=False, sort_keys=True),
                        ]
                    )
                )
            errors = self.status.list_job_errors(job_id, errors[-1]["row"], 1000) if len(errors) == 1000 else []
        headers = {"Content-Disposition": f'attachment; filename="job-{job_id}-errors.csv"'}
        return Response("".join(lines), mimetype="text/csv", headers=headers)

    # --- dead letters ---------------------------------------------------------------------

    @page("GET", "/ops/dead-letters", scope="ops:read")
    def console_dead_letter_counts(self, request: Request) -> Response:
        counts = self._gather({name: (name, "count_dead_letters") for name in SERVICES})
        return render(request, "dead_letters.html", counts=counts, service=None)

    @page("GET", f"/ops/dead-letters/<any({', '.join(SERVICES)}):service>", scope="ops:read")
    def console_dead_letters(self, request: Request, service: str) -> Response:
        filters = _dead_letter_filters(request.args)
        context: dict[str, Any] = {"service": service, "filters": filters, "found": None, "error": None}
        try:
            context["found"] = self._proxy(service).find_dead_letters(**_dead_letter_query(filters), limit=100)
        except ValidationFailed as exc:
            context["error"] = _invalid(exc)
            return render(request, "dead_letters.html", http_status=422, **context)
        return render(request, "dead_letters.html", **context)

    @page("POST", f"/ops/dead-letters/<any({', '.join(SERVICES)}):service>/replay", scope="ops:write")
    def console_replay_dead_letter(self, request: Request, service: str) -> Response:
        message_id = (request.form.get("message_id") or "").strip()
        if not message_id or len(message_id) > 200:
            return _done(request, service, "Which message? None was named.", 422)
        answer = self._proxy(service).replay_dead_letters([message_id])
        if answer["replayed"]:
            return _done(request, service, f"Replayed {message_id} to its handler.")
        if answer["not_replayable"]:
            return _done(request, service, f"{message_id} cannot be replayed (malformed, or an RPC request).", 409)
        return _done(request, service, f"{message_id} is no longer parked (replayed or purged already).", 404)

    @page("POST", f"/ops/dead-letters/<any({', '.join(SERVICES)}):service>/replay-matching", scope="ops:write")
    def console_replay_matching(self, request: Request, service: str) -> Response:
        filters = _dead_letter_filters(request.form)
        proxy = self._proxy(service)
        try:
            cap = _positive(request.form.get("cap") or "100", "cap")
            query = _dead_letter_query(filters)
            if request.form.get("confirm") != "yes":  # first a dry run: how many, which
                found = proxy.find_dead_letters(**query, limit=20)
                return render(
                    request, "dead_letters_confirm.html", service=service, filters=filters, cap=cap, found=found
                )
            answer = proxy.replay_matching_dead_letters(**query, cap=cap)
        except ValidationFailed as exc:
            return _done(request, service, _invalid(exc), 422)
        message = f"Replayed {len(answer['replayed'])} message(s)."
        if answer["not_replayable"]:
            message += (
                f" {len(answer['not_replayable'])} left parked: malformed messages and RPC requests cannot be replayed."
            )
        return _done(request, service, message)

    @page("POST", f"/ops/dead-letters/<any({', '.join(SERVICES)}):service>/purge", scope="ops:write")
    def console_purge_dead_letters(self, request: Request, service: str) -> Response:
        if (request.form.get("confirm") or "").strip() != service:
            return _done(request, service, f"Nothing purged: type {service} to confirm.", 422)
        purged = self._proxy(service).purge_dead_letters()["purged"]
        return _done(request, service, f"Purged {purged} message(s) from {service}.dead-letters.")

    def _proxy(self, service: str) -> Any:
        return getattr(self, service)

    # --- audit ----------------------------------------------------------------------

    @page("GET", "/ops/audit", scope="ops:read")
    def console_audit(self, request: Request) -> Response:
        key_id = (request.args.get("key_id") or "").strip() or None
        since_text = (request.args.get("since") or "").strip()
        context: dict[str, Any] = {"key_id": key_id or "", "since": since_text, "items": [], "next_url": None}
        try:
            if key_id is not None and not api_keys.KEY_ID.fullmatch(key_id):
                raise ValidationFailed("A key id is 12 lower-case letters and digits.", {"key_id": ["Invalid."]})
            since = _moment(since_text, "since") if since_text else None
            found = store.list_audit(
                self.access.Session, key_id=key_id, since=since, limit=50, cursor=request.args.get("cursor") or None
            )
        except ValidationFailed as exc:
            context["error"] = _invalid(exc)
            return render(request, "audit.html", http_status=422, **context)
        context["items"] = found["items"]
        if found["next_cursor"]:
            given = {name: value for name, value in (("key_id", key_id), ("since", since_text)) if value}
            context["next_url"] = "/ops/audit?" + urlencode({**given, "cursor": found["next_cursor"]})
        return render(request, "audit.html", **context)


# --- helpers ---------------------------------------------------------------------------


def _login_form(request: Request, target: str, error: str | None = None, status: int = 200) -> Response:
    """The sign-in form, bound to the pre-session cookie's nonce (a new one unless it has one)."""
    nonce = sessions.login_nonce(request.cookies.get(sessions.LOGIN_COOKIE)) or sessions.new_nonce()
    response = render(
        request,
        "login.html",
        http_status=status,
        login_csrf=sessions.csrf_token(request.console.secret, nonce),
        next=target,
        error=error,
    )
    options = _cookie_options(request)
    response.set_cookie(sessions.LOGIN_COOKIE, nonce, max_age=sessions.LOGIN_SECONDS, **options)
    return response


def _refused(exc: AccessDenied) -> str:
    if isinstance(exc, RateLimited):
        return "Too many attempts with this key; wait a moment."
    if exc.code == "INSUFFICIENT_SCOPE":
        return "This key may not use the console: it needs the scope ops:read."
    return "That is not a valid API key (unknown, revoked, expired or mistyped)."


def _next(value: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if value and value.startswith("/ops") and "//" not in value and "\\" not in value and value.isprintable():
        return value
    return "/ops"


def _same_site() -> dict:
    return {"httponly": True, "samesite": "Strict"}


def _cookie_options(request: Request) -> dict:
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return {"path": "/ops", "secure": secure, **_same_site()}


def _positive(value: str, name: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise ValidationFailed(f"{name} must be a positive whole number.", {name: ["Must be a positive integer."]})
    return int(value)


def _moment(value: str, name: str) -> str:
    """A date or date and time from a form (``2026-12-04`` or ``2026-12-04T10:30``, UTC unless it
    says otherwise), as ISO 8601."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            f"{name} must be a date (2026-12-04) or a date and time (2026-12-04T10:30).", {name: ["Invalid."]}
        ) from None
    if moment.tzinfo is None:  # the forms say UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _invalid(exc: ValidationFailed) -> str:
    details = exc.details if isinstance(exc.details, dict) else {}
    fields = "; ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in details.items())
    return f"{exc.message} {fields}".strip()


def _csv_line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v for v in values])
    return buffer.getvalue()


def _dead_letter_filters(values: Any) -> dict[str, str]:
    return {name: (values.get(name) or "").strip() for name in ("handler", "error", "since", "until")}


def _dead_letter_query(filters: dict[str, str]) -> dict[str, Any]:
    query: dict[str, Any] = {name: value for name, value in filters.items() if value}
    for name in ("since", "until"):
        if name in query:
            query[name] = _moment(query[name], name)
    return query


def _done(request: Request, service: str, message: str, status: int = 200) -> Response:
    return render(
        request, "dead_letters_done.html", http_status=status, service=service, message=message, failed=status >= 400
    )


def _given(filters: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in filters.items() if value}


def _keep(result: dict, pick) -> dict:
    return {"ok": True, "value": pick(result["value"])} if result["ok"] else result
