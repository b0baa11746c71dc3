"""The status service's applier: a background greenthread that applies pending
status requests in batches and then publishes their events from the outbox.

Both ways in (the ``request_status_change`` RPC and the gateway's
``status_change_requested`` event) only record a request as pending and wake the
applier, so every request follows one path, in arrival order per student, with
one transaction per batch. Requests left pending by a crashed process are picked
up by the next poll.

Students the status service has not heard of yet (their ``student_created``
event is still on its way) are resolved by asking the students service over
RPC, with a timeout; while it cannot answer, their requests stay pending.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import eventlet
from eventlet.queue import Empty, LightQueue
from nameko.exceptions import RpcTimeout, UnknownService
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy

from services import status_repo as repo
from services.exceptions import StudentNotFound
from services.models import StatusOutbox
from services.outbox import OutboxRelay

log = logging.getLogger(__name__)

BATCH_SIZE = 500
POLL_INTERVAL = 0.5
MAX_BACKOFF = 30.0


class StudentDirectory:
    """Asks the students service whether students exist (RPC with a timeout)."""

    def __init__(self, config: dict, timeout: float):
        self.config = config
        self.timeout = timeout

    def lookup(self, student_ids: set[int]) -> dict[int, bool]:
        """``{id: exists}`` for the ids the students service answered about."""
        found: dict[int, bool] = {}
        try:
            with ClusterRpcProxy(self.config, timeout=self.timeout) as rpc:
                for student_id in sorted(student_ids):
                    try:
                        rpc.students.get_student(student_id)
                        found[student_id] = True
                    except StudentNotFound:
                        found[student_id] = False
        except (RpcTimeout, UnknownService, OSError) as exc:
            log.warning("students service unavailable (%s); %d students stay pending", exc, len(student_ids))
        return found


class StatusApplier(DependencyProvider):
    """Worker interface: ``wake()`` after recording a pending request."""

    def __init__(self, db_attr: str = "db", batch_size: int = BATCH_SIZE):
        self.db_attr = db_attr
        self.batch_size = batch_size

    def setup(self) -> None:
        self.wakeups: LightQueue = LightQueue(maxsize=1)
        self.running = False

    def start(self) -> None:
        config = self.container.config
        db = next(d for d in self.container.dependencies if d.attr_name == self.db_attr)
        self.Session = db.Session
        self.relay = OutboxRelay(db.Session, StatusOutbox, config, self.container.service_name)
        self.directory = StudentDirectory(config, float(config.get("RPC_TIMEOUT", 5)))
        self.resolve_after = 0.0
        self.running = True
        self.gt = self.container.spawn_managed_thread(self._run)

    def stop(self) -> None:
        # finish the batch in hand and publish its events, then return
        self.running = False
        self.wake()
        self.gt.wait()

    def kill(self) -> None:
        self.running = False
        self.gt.kill()

    def get_dependency(self, worker_ctx: Any) -> StatusApplier:
        return self

    def wake(self) -> None:
        if self.wakeups.qsize() == 0:
            self.wakeups.put_nowait(None)

    def run_once(self) -> repo.BatchResult:
        """Resolve unknown students, apply one batch, publish its events."""
        with self.Session() as session:
            unknown = repo.due_unknown_students(session, self.batch_size)
        if unknown and time.monotonic() >= self.resolve_after:
            self._resolve(unknown)
        with self.Session.begin() as session:
            result = repo.apply_pending(session, self.batch_size)
        if result.events or not result.handled:
            self.relay.flush()
        return result

    def _resolve(self, student_ids: set[int]) -> None:
        answers = self.directory.lookup(student_ids)
        if len(answers) < len(student_ids):  # students service away: ask again later
            self.resolve_after = time.monotonic() + self.directory.timeout
        with self.Session.begin() as session:
            for student_id, exists in answers.items():
                if exists:
                    repo.ensure_student(session, student_id)
                else:
                    repo.reject_unknown(session, student_id)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                result = self.run_once()
                backoff = 0.5
            except Exception:
                if not self.running:
                    return
                log.exception("status applier failed; retrying in %.1fs", backoff)
                eventlet.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if result.handled >= self.batch_size:
                continue  # more waiting: no pause between full batches
            if not self.running:
                return
            try:
                self.wakeups.get(timeout=POLL_INTERVAL)
            except Empty:
                pass
