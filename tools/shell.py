"""Operator helpers for ``nameko shell``: find students, change a status, read its history.

Start the shell with them loaded (``make shell`` does this)::

    PYTHONSTARTUP=tools/shell.py nameko shell --config config.yaml

or, in a shell started with the project on ``sys.path`` (``PYTHONPATH=.``)::

    >>> from tools.shell import *

Then::

    >>> find_student("ada@example.org")                  # the student, or None
    >>> students(status="active", course="Biology")       # a table (a list of dicts)
    >>> change_status(1, "active", reason="term starts")  # waits for the outcome, returns the request
    >>> history(1)                                        # applied changes, oldest first, as a table
    >>> job = submit_job("term-end.csv")                   # a bulk job from a CSV file (or a list of dicts)
    >>> job_progress(job["job_id"]); wait_job(job["job_id"])
    >>> certificates(1); revoke("<code>", "issued in error")
    >>> verify("<code>")                                   # its signed credential checked: valid/revoked/invalid
    >>> notifications(state="failed"); resend(12)
    >>> dead_letters("status"); replay("status")          # parked events; send them back
    >>> keys(); key = create_key("web app", ["students:read"]); revoke_key(key["id"])
    >>> audit(key_id="k3y1d0000000", since="2026-12-01T00:00:00Z")  # who changed what, newest first

The helpers call the services through the shell's ``n.rpc`` (found in the
shell's namespace, or bound with ``use(n)``). Changes are recorded with the
actor ``shell:<your user name>``. The key and audit helpers read and write the
gateway's database named in the shell's config (no HTTP, no key needed: the shell
is inside the trust boundary). ``help(tools.shell)`` lists them.
"""

from __future__ import annotations

import csv
import getpass
import inspect
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "audit",
    "certificates",
    "change_status",
    "create_key",
    "dead_letters",
    "find_student",
    "history",
    "job_progress",
    "keys",
    "notifications",
    "replay",
    "resend",
    "revoke",
    "revoke_key",
    "students",
    "submit_job",
    "use",
    "verify",
    "wait_job",
]

PAGE = 500  # the largest page list_students and get_status_history serve
_helper = None  # the shell's `n`, once bound by use()


class Table(list):
    """Rows (dicts) that the shell shows as a table; still a plain list to code."""

    def __init__(self, rows: list[dict], columns: tuple[str, ...], note: str = ""):
        super().__init__(rows)
        self.columns = columns
        self.note = note

    def __repr__(self) -> str:
        cells = [[_cell(row.get(column)) for column in self.columns] for row in self]
        widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(self.columns)]
        lines = [
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
            for line in [list(self.columns), ["-" * width for width in widths], *cells]
        ]
        lines.append(f"({len(self)} row{'s' if len(self) != 1 else ''}{self.note})")
        return "\n".join(lines)

    __str__ = __repr__


def use(helper: Any) -> None:
    """Use ``helper`` (the shell's ``n``) for every call, instead of looking for ``n``."""
    global _helper
    _helper = helper


def find_student(email: str) -> dict | None:
    """The student with this e-mail (case-insensitive), or None."""
    # imported, it is registered with nameko: the reply raises it rather than a bare RemoteError
    from services.exceptions import StudentNotFound

    try:
        return _rpc().students.get_student_by_email(email)
    except StudentNotFound:
        print(f"no student with e-mail {email!r}")
        return None


def students(status: str | None = None, course: str | None = None, limit: int = 100) -> Table:
    """Students (optionally by status and course), oldest first, at most ``limit``; shown as a table."""
    rows = []
    list_students = _rpc().students.list_students
    for student in _all(list_students, page=min(limit + 1, PAGE), status=status, course=course):
        if len(rows) == limit:
            return Table(rows, STUDENT_COLUMNS, "; more exist: pass a larger limit=")
        rows.append(student)
    return Table(rows, STUDENT_COLUMNS)


def change_status(
    student_id: int, status: str, reason: str | None = None, wait: bool = True, timeout: float = 10
) -> dict:
    """Request a status change and, with ``wait``, return the request once it is
    applied or rejected (``state`` and ``error`` say which). After ``timeout``
    seconds it returns the request as it stands (still ``pending``)."""
    rpc = _rpc()
    request = rpc.status.request_status_change(student_id, status, reason=reason, actor=_actor())
    deadline = time.monotonic() + timeout
    while wait and request["state"] == "pending":
        if time.monotonic() >= deadline:
            print(f"still pending after {timeout}s: n.rpc.status.get_status_request({request['request_id']!r})")
            break
        time.sleep(0.1)
        request = rpc.status.get_status_request(request["request_id"])
    return request


def submit_job(rows: str | list[dict], idempotency_key: str | None = None) -> dict:
    """Submit a bulk job: ``rows`` is a list of ``{student_id | email, status, reason}``
    or the path of a CSV file with those columns. Returns the job (``job_id``, counts)."""
    if isinstance(rows, str):
        with open(rows, newline="", encoding="utf-8-sig") as file:
            rows = [
                {key: _csv_value(key, value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(file)
            ]
    return _rpc().status.submit_job(rows, idempotency_key=idempotency_key, actor=_actor())


def job_progress(job_id: str, errors: int = 20) -> dict:
    """Counts by state, rows/s so far and the first ``errors`` row errors of a job."""
    return _rpc().status.get_job(job_id, errors)


def wait_job(job_id: str, timeout: float = 600, every: float = 2) -> dict:
    """Print the progress every ``every`` seconds until the job is done (or ``timeout``); return it."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_progress(job_id)
        counts = ", ".join(f"{key} {job[key]}" for key in ("total", "pending", "applied", "rejected", "failed"))
        print(f"{job['state']}: {counts}; {job['rows_per_second']} rows/s")
        if job["state"] == "done" or time.monotonic() >= deadline:
            return job
        time.sleep(every)


def _csv_value(key: str, value: str) -> Any:
    value = value.strip()
    return int(value) if key == "student_id" and value.isdigit() else value


def history(student_id: int) -> Table:
    """Every applied status change of the student, oldest first; shown as a table."""
    changes = _all(lambda **page: _rpc().status.get_status_history(student_id, **page))
    return Table(list(changes), HISTORY_COLUMNS)


def certificates(student_id: int) -> Table:
    """The student's certificates (code, course, valid or revoked); shown as a table."""
    return Table(_rpc().certificates.list_certificates(student_id), CERTIFICATE_COLUMNS)


def revoke(code: str, reason: str) -> dict:
    """Revoke a certificate; it stays verifiable, shown as revoked with the reason."""
    return _rpc().certificates.revoke_certificate(code, reason)


def verify(code: str) -> dict:
    """Check a certificate's signed credential as an outside verifier would (signature against the
    published keys, claims and dates, its bit in the signed status list): ``{state, reasons}``."""
    from services import credentials  # here: as PYTHONSTARTUP this file runs before the project is on sys.path

    certificates_rpc = _rpc().certificates
    token = certificates_rpc.get_certificate_credential(code)["jwt"]
    verdict = credentials.verify(
        token,
        certificates_rpc.get_jwks(),
        lambda url: certificates_rpc.get_status_list(int(url.rstrip("/").rsplit("/", 1)[1]))["jwt"],
    )
    return {"state": verdict.state, "reasons": verdict.reasons}


def notifications(student_id: int | None = None, state: str | None = None, limit: int = 50) -> Table:
    """Mails (optionally of one student, or in one state: pending, sent, failed); a table."""
    page = _rpc().notifications.list_notifications(student_id=student_id, state=state, limit=limit)
    return Table(page["items"], NOTIFICATION_COLUMNS, "; more exist" if page["next_cursor"] else "")


def resend(notification_id: int) -> dict:
    """Send a failed (or sent) mail again."""
    return _rpc().notifications.resend_notification(notification_id)


def dead_letters(service: str) -> Table:
    """Events that ``service`` parked after its handler kept failing; a table."""
    return Table(getattr(_rpc(), service).list_dead_letters(), DEAD_LETTER_COLUMNS)


def replay(service: str, message_ids: list[str] | None = None) -> dict:
    """Send parked events back to their handler (all of them if no ids are given)."""
    return getattr(_rpc(), service).replay_dead_letters(message_ids)


def keys() -> Table:
    """Every API key (never a secret); a table."""
    from gateway.access import store

    return Table(_with_keystore(store.list_keys), KEY_COLUMNS)


def create_key(name: str, scopes: list[str], expires_in_days: float | None = None) -> dict:
    """A new API key: the returned ``api_key`` is shown this once (only its keyed hash is kept)."""
    from gateway.access import store

    record, key = _with_keystore(
        lambda Session, secret: store.create_key(Session, secret, name, scopes, expires_in_days, created_by=_actor()),
        secret=True,
    )
    return {**record, "api_key": key}


def revoke_key(key_id: str) -> dict:
    """Revoke an API key: every gateway refuses it within API_KEY_REFRESH_SECONDS."""
    from gateway.access import store

    return _with_keystore(lambda Session: store.revoke_key(Session, key_id))


def audit(key_id: str | None = None, since: str | None = None, limit: int = 50) -> Table:
    """The audit trail, newest first: changes and refusals (optionally of one key, since an ISO time)."""
    from datetime import datetime

    from gateway.access import store

    when = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    page = _with_keystore(lambda Session: store.list_audit(Session, key_id=key_id, since=when, limit=limit))
    return Table(page["items"], AUDIT_COLUMNS, "; more exist" if page["next_cursor"] else "")


def _with_keystore(work: Any, secret: bool = False) -> Any:
    from tools.keys import KeyStore

    keystore = KeyStore(_nameko().config)
    try:
        return work(keystore.Session, keystore.secret_key) if secret else work(keystore.Session)
    finally:
        keystore.close()


KEY_COLUMNS = ("id", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked")
AUDIT_COLUMNS = ("at", "key_name", "on_behalf_of", "method", "route", "targets", "status", "correlation_id")
STUDENT_COLUMNS = ("id", "name", "email", "course", "status", "version")
CERTIFICATE_COLUMNS = ("code", "course", "status", "issued_at", "revoked_at", "revoke_reason", "correlation_id")
NOTIFICATION_COLUMNS = (
    "id",
    "kind",
    "recipient",
    "subject",
    "state",
    "attempts",
    "sent_at",
    "last_error",
    "correlation_id",
)
DEAD_LETTER_COLUMNS = ("message_id", "handler", "routing_key", "attempts", "failed_at", "error", "correlation_id")
HISTORY_COLUMNS = ("occurred_at", "from_status", "to_status", "reason", "actor", "request_id")


def _all(list_page: Any, page: int = PAGE, **filters: Any) -> Iterator[dict]:
    """Every item of a keyset-paged RPC method (``{"items", "next_cursor"}``)."""
    cursor = None
    while True:
        result = list_page(**filters, limit=page, cursor=cursor)
        yield from result["items"]
        cursor = result["next_cursor"]
        if not cursor:
            return


def _cell(value: Any, width: int = 40) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _actor() -> str:
    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "shell"


def _rpc() -> Any:
    return _nameko().rpc


def _nameko() -> Any:
    """The shell's ``n``: bound with ``use``, else found in ``__main__`` or a caller's globals."""
    if _helper is not None:
        return _helper
    namespaces = [vars(sys.modules["__main__"])]
    frame = inspect.currentframe()
    while frame is not None:  # nameko shell runs typed code with its own namespace as globals
        namespaces.append(frame.f_globals)
        frame = frame.f_back
    for namespace in namespaces:
        helper = namespace.get("n")
        if hasattr(helper, "rpc"):
            return helper
    raise RuntimeError("no `n` found: use these helpers inside `nameko shell`, or call use(n) first")


def with_timeout(helper: Any) -> None:
    """Give the shell's ``n.rpc`` the configured ``RPC_TIMEOUT`` (nameko's has none),
    so a call to a service that is down raises ``RpcTimeout`` instead of hanging."""
    from services.infra.rpc import standalone_proxy

    proxy = standalone_proxy(helper.config)
    close_original = helper.disconnect
    helper.rpc = proxy.start()

    def disconnect() -> None:
        proxy.stop()
        close_original()

    helper.disconnect = disconnect


def _start_in_nameko_shell(namespace: dict) -> None:
    """Run as ``PYTHONSTARTUP`` by nameko shell: this file was executed in the
    shell's namespace. Import it as ``tools.shell`` instead, bound to ``n``, and
    leave the shell its helpers and ``tools`` (for ``help(tools.shell)``)."""
    here = os.path.abspath(_start_in_nameko_shell.__code__.co_filename)
    root = os.path.dirname(os.path.dirname(here))
    if root not in sys.path:
        sys.path.insert(0, root)
    import tools.shell as module

    module.with_timeout(namespace["n"])
    module.use(namespace["n"])
    helpers = {name: getattr(module, name) for name in module.__all__}
    package = sys.modules["tools"]
    # namespace is also this function's globals: from here on, use locals only
    for name in [name for name in namespace if name not in ("n", "__builtins__")]:
        del namespace[name]
    namespace.update(helpers, tools=package)
    print(f"mensageria helpers: {', '.join(helpers)} (help(tools.shell))")


if __name__ != "tools.shell" and "n" in globals():
    _start_in_nameko_shell(globals())
