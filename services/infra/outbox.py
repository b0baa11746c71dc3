"""Transactional outbox: events are rows written in the same transaction as the
change that caused them, and a relay publishes them (persistent, with publisher
confirms) in order, and deletes each batch once the broker has confirmed it: the
table holds only what waits, and a message goes out as the JSON text its row stores.

A crash between commit and publish loses nothing: the rows are still there and
the next flush publishes them (subscribers are idempotent, so a repeat after a
crash between publish and delete is harmless). Each row keeps the correlation id of
the work that wrote it and is published with it (the AMQP header
``nameko.correlation_id``), so the worker that handles the event runs under it; while
traces are on, likewise the span that wrote it (``nameko.traceparent`` of a PRODUCER span)::

    class StudentsService:
        outbox = Outbox(StudentsOutbox)

        @rpc
        def create_student(self, data):
            with self.db.begin() as session:
                ...
                self.outbox.add(session, "student_created", {...})
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from nameko.amqp.publish import Publisher, get_connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from prometheus_client.core import Metric
from sqlalchemy import Select, Text, cast, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.infra import correlation, metrics, tracing
from services.infra.background import BackgroundLoop
from services.infra.models import OutboxMixin, utcnow
from services.infra.topology import declarations

BATCH_SIZE = 500
JSON_CONTENT_TYPE = "application/json"  # what nameko's consumers accept (its json serializer)


class OutboxRelay:
    """Publishes unsent outbox rows of one service, oldest first."""

    def __init__(self, session_factory: sessionmaker, model: type[OutboxMixin], config: dict, source: str):
        self.Session = session_factory
        self.model = model
        self.declare = declarations(source, config)
        self.exchange = self.declare[0]
        self.amqp_uri = config[AMQP_URI_CONFIG_KEY]
        self.publisher = Publisher(self.amqp_uri, declare=self.declare)
        self.declared = False

    @functools.cached_property
    def unsent(self) -> Select:
        """The read of the oldest unsent rows: built once per relay, not at every read (SQLAlchemy
        then memoizes its cache key)."""
        return (
            select(
                self.model.id,
                self.model.event_type,
                cast(self.model.payload, Text).label("payload"),  # as stored: published as it is
                self.model.correlation_id,
                self.model.traceparent,
            )
            .order_by(self.model.id)
            .limit(BATCH_SIZE)
        )

    def declare_topology(self) -> None:
        """Declare the exchange and its subscriber queues (idempotent)."""
        with get_connection(self.amqp_uri) as connection:
            channel = connection.channel()
            for entity in self.declare:
                entity.maybe_bind(channel)
                entity.declare()
        self.declared = True

    def flush(self) -> int:
        """Publish every unsent row; returns how many were published."""
        if not self.declared:  # at start-up, before anything is published
            self.declare_topology()
        published = 0
        while True:
            with self.Session() as session:  # read only: no lock held while publishing
                rows = session.execute(self.unsent).all()
            if not rows:
                return published
            for row in rows:
                headers = {correlation.HEADER: row.correlation_id} if row.correlation_id else {}
                with metrics.publishing(self.exchange.name), self._span(row) as span:
                    if span is not None:
                        headers.update(tracing.amqp_headers(span))
                    self.publisher.publish(
                        row.payload,
                        exchange=self.exchange,
                        routing_key=row.event_type,
                        extra_headers=headers,
                        content_type=JSON_CONTENT_TYPE,  # already JSON: kombu sends it without decoding
                        content_encoding="utf-8",  # and encoding it again (a tenth of a relay's work)
                    )
            with self.Session.begin() as session:
                session.execute(delete(self.model).where(self.model.id.in_([row.id for row in rows])))
            published += len(rows)
            if len(rows) < BATCH_SIZE:
                # all there was when read: a row committed since comes with a wake-up of its own
                # (the writer's, or the relay's next poll), not with another read of an empty table
                return published

    def _span(self, row: Any):
        """The PRODUCER span of a row's publish, child of the span that wrote the row (traces on)."""
        if not (row.traceparent and tracing.enabled()):
            return contextlib.nullcontext()
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.name": "publish",
            "messaging.operation.type": "send",
            "messaging.destination.name": self.exchange.name,
            "messaging.rabbitmq.destination.routing_key": row.event_type,
            "mensageria.outbox.id": row.id,
        }
        return tracing.span(f"publish {self.exchange.name}", tracing.PRODUCER, row.traceparent, attributes)

    def gauges(self, service: str) -> list[Metric]:
        """Rows waiting to be published and the age of the oldest, for ``/metrics``."""
        with self.Session() as session:
            waiting, oldest = session.execute(select(func.count(), func.min(self.model.created_at))).one()
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        return [
            metrics.OUTBOX_PENDING.family({(service,): waiting}),
            metrics.OUTBOX_OLDEST_AGE.family({(service,): max(age, 0.0)}),
        ]


class OutboxWriter:
    """What a worker sees: ``add()`` an event to the current transaction."""

    def __init__(self, model: type[OutboxMixin]):
        self.model = model
        self.added = 0

    def add(
        self, session: Session, event_type: str, payload: dict[str, Any], correlation_id: str | None = None
    ) -> None:
        """Write the event; it is published with ``correlation_id`` (default: the id in hand), and
        while traces are on as a child of the span in hand."""
        row = self.model(
            event_type=event_type,
            payload=payload,
            correlation_id=correlation_id or correlation.current(),
            traceparent=tracing.current_traceparent(),
        )
        session.add(row)
        self.added += 1


class Outbox(BackgroundLoop):
    """Outbox writer for workers plus a background relay.

    The relay wakes after every worker that added events, and polls once a
    second for anything left behind (for instance by a crashed predecessor).
    """

    def __init__(self, model: type[OutboxMixin], db_attr: str = "db"):
        self.model = model
        self.db_attr = db_attr

    def setup(self) -> None:
        super().setup()
        self.writers: dict = {}

    def start(self) -> None:
        db = self.sibling(self.db_attr)
        self.relay = OutboxRelay(db.Session, self.model, self.container.config, self.container.service_name)
        super().start()

    def get_dependency(self, worker_ctx: Any) -> OutboxWriter:
        writer = OutboxWriter(self.model)
        self.writers[worker_ctx] = writer
        return writer

    def worker_teardown(self, worker_ctx: Any) -> None:
        writer = self.writers.pop(worker_ctx, None)
        if writer is not None and writer.added:
            self.wake()

    def step(self) -> bool:
        self.relay.flush()
        return False

    def collect_metrics(self) -> list[Metric]:
        return self.relay.gauges(self.container.service_name)
