"""Transactional outbox: events are rows written in the same transaction as the
change that caused them, and a relay publishes them (persistent, with publisher
confirms) in order, marking each batch as sent.

A crash between commit and publish loses nothing: the rows are still unsent and
the next flush publishes them (subscribers are idempotent, so a repeat after a
crash between publish and mark is harmless)::

    class StudentsService:
        outbox = Outbox(StudentsOutbox)

        @rpc
        def create_student(self, data):
            with self.db.get_session() as session:
                ...
                self.outbox.add(session, "student_created", {...})
"""

from __future__ import annotations

import logging
from typing import Any

import eventlet
from eventlet.queue import Empty, LightQueue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.models import OutboxMixin, utcnow
from services.topology import declarations

log = logging.getLogger(__name__)

BATCH_SIZE = 500
POLL_INTERVAL = 1.0
MAX_BACKOFF = 30.0


class OutboxRelay:
    """Publishes unsent outbox rows of one service, oldest first."""

    def __init__(self, session_factory: sessionmaker, model: type[OutboxMixin], config: dict, source: str):
        self.Session = session_factory
        self.model = model
        self.declare = declarations(source, config)
        self.exchange = self.declare[0]
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], declare=self.declare)

    def flush(self) -> int:
        """Publish every unsent row; returns how many were published."""
        published = 0
        while True:
            with self.Session() as session:  # read only: no lock held while publishing
                rows = session.execute(
                    select(self.model.id, self.model.event_type, self.model.payload)
                    .where(self.model.published_at.is_(None))
                    .order_by(self.model.id)
                    .limit(BATCH_SIZE)
                ).all()
            if not rows:
                return published
            for row in rows:
                self.publisher.publish(row.payload, exchange=self.exchange, routing_key=row.event_type)
            with self.Session.begin() as session:
                session.execute(
                    update(self.model)
                    .where(self.model.id.in_([row.id for row in rows]))
                    .values(published_at=utcnow())
                )
            published += len(rows)


class OutboxWriter:
    """What a worker sees: ``add()`` an event to the current transaction."""

    def __init__(self, model: type[OutboxMixin]):
        self.model = model
        self.added = 0

    def add(self, session: Session, event_type: str, payload: dict[str, Any]) -> None:
        session.add(self.model(event_type=event_type, payload=payload))
        self.added += 1


class Outbox(DependencyProvider):
    """Outbox writer for workers plus a background relay greenthread.

    The relay wakes after every worker that added events, and polls once a
    second for anything left behind (for instance by a crashed predecessor).
    """

    def __init__(self, model: type[OutboxMixin], db_attr: str = "db"):
        self.model = model
        self.db_attr = db_attr

    def setup(self) -> None:
        self.wakeups: LightQueue = LightQueue(maxsize=1)
        self.running = False
        self.writers: dict = {}

    def start(self) -> None:
        db = next(d for d in self.container.dependencies if d.attr_name == self.db_attr)
        self.relay = OutboxRelay(db.Session, self.model, self.container.config, self.container.service_name)
        self.running = True
        self.gt = self.container.spawn_managed_thread(self._run)

    def stop(self) -> None:
        self.running = False
        self.wake()
        self.gt.wait()

    def kill(self) -> None:
        self.running = False
        self.gt.kill()

    def wake(self) -> None:
        if self.wakeups.qsize() == 0:
            self.wakeups.put_nowait(None)

    def get_dependency(self, worker_ctx: Any) -> OutboxWriter:
        writer = OutboxWriter(self.model)
        self.writers[worker_ctx] = writer
        return writer

    def worker_teardown(self, worker_ctx: Any) -> None:
        writer = self.writers.pop(worker_ctx, None)
        if writer is not None and writer.added:
            self.wake()

    def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                self.relay.flush()
                backoff = 0.5
            except Exception:  # broker or database away: keep rows, try again
                if not self.running:
                    return
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                eventlet.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if not self.running:
                return
            try:
                self.wakeups.get(timeout=POLL_INTERVAL)
            except Empty:
                pass
