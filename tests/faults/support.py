"""Fault-test machinery (private RabbitMQ nodes come from ``tools.local_cluster``): a status-change workload over
HTTP (with the system's admin key), and the audit that counts what became of every
accepted request — and checks the gateway's audit trail recorded each one."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import eventlet
import requests
from sqlalchemy import select

from gateway.access import keys
from gateway.access.models import AuditEntry
from services import lifecycle
from services.infra.db import build_engine
from tests.e2e.support import System, bearer

SETTLED = ("applied", "rejected")  # what every accepted request must become
STATUS_ROUTE = "/students/{student_id}/status"  # as the audit trail names the route


@dataclass
class Workload:
    """Status changes submitted over HTTP by concurrent clients."""

    system: System
    students: list[int] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # request id -> student id
    refused: Counter = field(default_factory=Counter)  # HTTP status -> count (not accepted)
    retried: Counter = field(default_factory=Counter)  # HTTP status -> attempts repeated after it

    def create_students(self, count: int, tag: str) -> None:
        def create(n: int) -> int:
            response = requests.post(
                f"{self.system.base_url}/students",
                json={"name": f"Fault {n}", "email": f"f{n}.{tag}@example.org", "course": f"faults-{tag}"},
                headers=bearer(self.system.admin_key),
                timeout=10,
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

        self.students = list(eventlet.GreenPool(16).imap(create, range(count)))

    def submit(
        self,
        total: int,
        concurrency: int = 16,
        on_progress=None,
        rounds: list[str] | None = None,
        retry_for: float = 0.0,
    ) -> None:
        """``total`` requests, round-robin over the students, alternating targets
        so that most are real transitions; ``on_progress(n)`` after each accept.

        With ``retry_for`` (seconds), each request is sent as a careful client sends it: with an
        ``Idempotency-Key``, and again with the same key after a 503, a 504 or no answer, until it
        is accepted or ``retry_for`` has passed (backing off from 0.2 s to 2 s)."""
        # each student's own sequence: real transitions, then "completed" (final),
        # after which every further change is rejected with INVALID_TRANSITION
        rounds = rounds or ["active", "suspended", "active", "completed", "active"]
        count = len(self.students)
        plan = [(self.students[n % count], rounds[(n // count) % len(rounds)]) for n in range(total)]
        session_pool = [self.system.session() for _ in range(concurrency)]

        def post(n: int, student_id: int, target: str) -> requests.Response | None:
            headers = {"Idempotency-Key": f"workload-{n}"} if retry_for else {}
            try:
                return session_pool[n % concurrency].post(
                    f"{self.system.base_url}/students/{student_id}/status",
                    json={"status": target, "reason": f"fault workload {n}"},
                    headers=headers,
                    timeout=15,
                )
            except requests.RequestException:
                return None

        def send(item: tuple[int, tuple[int, str]]) -> None:
            n, (student_id, target) = item
            deadline, pause = time.monotonic() + retry_for, 0.2
            response = post(n, student_id, target)
            while _worth_retrying(response) and time.monotonic() < deadline:
                self.retried["no answer" if response is None else response.status_code] += 1
                eventlet.sleep(pause)
                pause = min(pause * 2, 2.0)
                response = post(n, student_id, target)
            if response is None:
                self.refused["no answer"] += 1
                return
            assert response.status_code != 500, response.text
            if response.status_code == 202:
                self.accepted[response.json()["request_id"]] = student_id
                if on_progress:
                    on_progress(len(self.accepted))
            else:
                self.refused[response.status_code] += 1

        for _ in eventlet.GreenPool(concurrency).imap(send, enumerate(plan)):
            pass

    def audit(self, timeout: float = 180.0) -> dict:
        """Wait until no accepted request is pending, then count the outcomes."""
        states: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        http = self.system.session()
        while time.monotonic() < deadline:
            # asked again until settled: pending, or "missing" (503/504 while status restarts) so far
            for request_id in [r for r in self.accepted if states.get(r, {}).get("state") not in SETTLED]:
                response = http.get(f"{self.system.base_url}/status-requests/{request_id}", timeout=10)
                states[request_id] = response.json() if response.status_code == 200 else {"state": "missing"}
            if all(s["state"] in SETTLED for s in states.values()) and len(states) == len(self.accepted):
                break
            time.sleep(0.5)
        counts = Counter(s["state"] for s in states.values())
        history_ids, chain_errors, read_copy_mismatches = self._histories(http, deadline)
        unaudited = self._unaudited(deadline)
        changed = {r for r, s in states.items() if s["state"] == "applied" and s["from_status"] != s["status"]}
        return {
            "submitted": len(self.accepted) + sum(self.refused.values()),
            "accepted": len(self.accepted),
            "refused": dict(self.refused),
            "retried": dict(self.retried),
            "applied": counts["applied"],
            "rejected": counts["rejected"],
            "lost": len(self.accepted) - counts["applied"] - counts["rejected"],
            "history_rows": len(history_ids),
            "duplicated": len(history_ids) - len(set(history_ids)),
            "changes_without_history": len(changed - set(history_ids)),
            # the broker took it, but the client's answer was lost (503/504/no answer):
            # applied once, as a retry with an Idempotency-Key would have found it
            "applied_though_refused": len(set(history_ids) - changed),
            "chain_errors": chain_errors,
            "read_copy_mismatches": read_copy_mismatches,
            "unaudited": unaudited,
        }

    def submit_job(self, rows_per_student: int, rounds: tuple[str, ...] = ("active", "suspended")) -> dict:
        """One bulk job (CSV): every student's rows go through ``rounds`` in turn,
        so each row is a real transition if applied in order. Returns the 202 body."""
        lines = ["student_id,status,reason"] + [
            f"{student_id},{rounds[n % len(rounds)]},bulk row {n}"
            for n in range(rows_per_student)
            for student_id in self.students
        ]
        response = requests.post(
            f"{self.system.base_url}/status-requests/bulk",
            data="\n".join(lines).encode(),
            headers={"Content-Type": "text/csv", **bearer(self.system.admin_key)},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict | None:
        """The job's progress; None while it cannot be read (503/504: restarting; or the connection
        dropped while a broker node went away), as a polling client would ask again."""
        try:
            response = requests.get(
                f"{self.system.base_url}/jobs/{job_id}", headers=bearer(self.system.admin_key), timeout=10
            )
        except requests.ConnectionError:
            return None
        if response.status_code in (503, 504):
            return None
        assert response.status_code == 200, response.text
        return response.json()

    def audit_job(self, job_id: str, timeout: float = 180.0) -> dict:
        """Wait until the job is done, then check every student's history against it."""
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while (job is None or job["state"] != "done") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.job(job_id)
        assert job is not None, f"the status service did not answer within {timeout:g}s"
        history_ids, chain_errors, read_copy_mismatches = self._histories(self.system.session(), deadline)
        return {
            **{key: job[key] for key in ("state", "total", "pending", "applied", "rejected", "failed")},
            "lost": job["total"] - job["applied"] - job["rejected"] - job["failed"],
            "history_rows": len(history_ids),
            "duplicated": len(history_ids) - len(set(history_ids)),
            "chain_errors": chain_errors,
            "read_copy_mismatches": read_copy_mismatches,
        }

    def _histories(self, http: requests.Session, deadline: float) -> tuple[list[str], int, int]:
        """Request ids in every student's history, broken links in the chains, and
        students whose read copy has not converged to their last status."""
        history_ids, chain_errors, final = [], 0, {}
        for student_id in self.students:
            rows = self._history(http, student_id)
            history_ids += [row["request_id"] for row in rows]
            expected = "enrolled"
            for version, row in enumerate(rows, start=1):
                ok = row["from_status"] == expected and lifecycle.is_allowed(row["from_status"], row["to_status"])
                chain_errors += not (ok and row["version"] == version)
                expected = row["to_status"]
            final[student_id] = expected
        # the students' read copy is fed by student_status_changed: it must converge
        read_copy_mismatches = len(final)
        while read_copy_mismatches and time.monotonic() < deadline + 30:
            read_copy_mismatches = sum(
                http.get(f"{self.system.base_url}/students/{sid}", timeout=10).json()["status"] != status
                for sid, status in final.items()
            )
            time.sleep(0.5 if read_copy_mismatches else 0)
        return history_ids, chain_errors, read_copy_mismatches

    def _unaudited(self, deadline: float) -> int:
        """Accepted requests without their entry (``202``, the admin key) in the gateway's audit
        trail; waited for, as entries are written in batches and retried while the database is away."""
        key_id = keys.parse(self.system.admin_key).key_id
        query = select(AuditEntry.targets).where(
            AuditEntry.route == STATUS_ROUTE, AuditEntry.status == 202, AuditEntry.key_id == key_id
        )
        engine = build_engine(self.system.db_uris["gateway:GatewayBase"])
        try:
            while True:
                with engine.connect() as connection:
                    audited = {targets.get("request_id") for targets in connection.scalars(query)}
                missing = len(set(self.accepted) - audited)
                if not missing or time.monotonic() > deadline:
                    return missing
                time.sleep(0.5)
        finally:
            engine.dispose()

    def _history(self, http: requests.Session, student_id: int) -> list[dict]:
        rows, cursor = [], None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"{self.system.base_url}/students/{student_id}/history", params=params, timeout=10).json()
            rows += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return rows


def _worth_retrying(response: requests.Response | None) -> bool:
    """What a client sends again with the same ``Idempotency-Key``: no answer, 503 or 504."""
    return response is None or response.status_code in (503, 504)


def assert_nothing_lost(report: dict) -> None:
    print(f"\nFAULT REPORT {report}")  # the figures quoted in the README
    assert report["lost"] == 0, report
    assert report["duplicated"] == 0, report
    assert report["changes_without_history"] == 0, report
    assert report["applied_though_refused"] <= sum(report["refused"].values()), report
    assert report["chain_errors"] == 0, report
    assert report["read_copy_mismatches"] == 0, report
    assert report["unaudited"] == 0, report
