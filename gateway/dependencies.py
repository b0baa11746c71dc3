"""The gateway's dependency providers: RPC with a timeout, durable dispatch,
settings."""

from __future__ import annotations

import time
from typing import Any

import eventlet
from eventlet.event import Event
from nameko.amqp.publish import UndeliverableMessage
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider

from services.exceptions import ServiceUnavailable
from services.infra import metrics, tracing
from services.infra.rpc import BROKER_ERRORS
from services.infra.settings import Settings
from services.infra.topology import subscriber_queues

__all__ = ["BatchingEventDispatcher", "DurableEventDispatcher", "KnownStudents"]


class DurableEventDispatcher(EventDispatcher):
    """Dispatches with publisher confirms into queues declared beforehand.

    Subscriber queues (see :mod:`services.infra.topology`) are declared at start-up,
    and ``mandatory`` makes an unroutable event an error instead of a silent
    drop, so a confirmed dispatch means the event is stored in a durable queue.
    """

    def __init__(self, **options: Any):
        options.setdefault("mandatory", True)
        super().__init__(**options)

    def setup(self) -> None:
        self.declare.extend(subscriber_queues(self.container.service_name, self.container.config))
        super().setup()

    def get_dependency(self, worker_ctx: Any):
        headers = self.get_message_headers(worker_ctx)

        def durable_dispatch(event_type: str, payload: dict) -> None:
            with self._producer_span(event_type) as span:
                self._publish(event_type, payload, {**headers, **tracing.amqp_headers(span)} if span else headers)

        return durable_dispatch

    def _producer_span(self, event_type: str):
        """A PRODUCER span for one dispatch (a no-op while traces are off)."""
        attributes = None
        if tracing.enabled():
            attributes = {
                "messaging.system": "rabbitmq",
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
                "messaging.destination.name": self.exchange.name,
                "messaging.rabbitmq.destination.routing_key": event_type,
            }
        return tracing.span(f"publish {self.exchange.name}", tracing.PRODUCER, attributes=attributes)

    def _publish(self, event_type: str, payload: dict, headers: dict | None = None) -> None:
        try:
            with metrics.publishing(self.exchange.name):
                self.publisher.publish(
                    payload, exchange=self.exchange, routing_key=event_type, extra_headers=headers or {}
                )
        except UndeliverableMessage:  # its queue was deleted behind our back
            raise ServiceUnavailable("No queue accepts this request.", {"event_type": event_type}) from None
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable("The message broker is unreachable.", {"reason": str(exc)}) from None


class BatchingEventDispatcher(DurableEventDispatcher):
    """Dispatches made while the previous message awaits its confirm travel
    together, as one message ``{batch_key: [payload, ...]}`` (group commit).

    Each caller still returns only once the message carrying its payload is
    confirmed and routed, or gets the same error as a lone dispatch. A caller
    alone waits for nothing: its message leaves at once. One greenthread per
    event type publishes, so messages leave in the order their callers came.
    A message carries the context headers (the correlation id) of its first
    caller: a payload that must keep its own carries it inside (while traces are on,
    each payload gets the ``traceparent`` of its caller's PRODUCER span). Several
    payloads of one call travel in one message, in the order given (a batch may
    grow past ``max_batch`` rather than split them)::

        class GatewayService:
            dispatch = BatchingEventDispatcher(batch_key="requests")

        self.dispatch("status_change_requested", activation, completion)
    """

    def __init__(self, batch_key: str, max_batch: int = 500, **options: Any):
        self.batch_key = batch_key
        self.max_batch = max_batch
        super().__init__(**options)

    def setup(self) -> None:
        super().setup()
        self.waiting: dict[str, list[tuple[dict, dict, Event]]] = {}
        self.flushing: set[str] = set()

    def get_dependency(self, worker_ctx: Any):
        headers = self.get_message_headers(worker_ctx)

        def batched_dispatch(event_type: str, *payloads: dict) -> None:
            with self._producer_span(event_type) as span:
                message_headers = headers
                if span is not None:  # each payload keeps its own span: requests share a message
                    payloads = tuple({**payload, **tracing.carrier_of(span)} for payload in payloads)
                    message_headers = {**headers, **tracing.amqp_headers(span)}
                done = Event()
                queue = self.waiting.setdefault(event_type, [])
                queue.append((payloads, message_headers, done))
                if event_type not in self.flushing:
                    self.flushing.add(event_type)
                    eventlet.spawn_n(self._flush, event_type)
                done.wait()  # re-raises the publish's error, if any

        return batched_dispatch

    def _flush(self, event_type: str) -> None:
        try:
            while queue := self.waiting.get(event_type):
                taken = _calls_within(queue, self.max_batch)
                batch, self.waiting[event_type] = queue[:taken], queue[taken:]
                try:
                    body = {self.batch_key: [payload for payloads, _, _ in batch for payload in payloads]}
                    self._publish(event_type, body, batch[0][1])
                except Exception as exc:  # every caller of the batch gets the error
                    for _, _, done in batch:
                        done.send_exception(exc)
                else:
                    for _, _, done in batch:
                        done.send(None)
        finally:
            self.flushing.discard(event_type)


def _calls_within(queue: list[tuple[tuple[dict, ...], dict, Event]], limit: int) -> int:
    """How many of the waiting calls, from the first, one message takes: as many as hold at most
    ``limit`` payloads, and always the first, however many it has."""
    taken = total = 0
    for payloads, _, _ in queue:
        total += len(payloads)
        if taken and total > limit:
            break
        taken += 1
    return taken


class KnownStudents(DependencyProvider):
    """Ids of students that existed a moment ago, so that a burst of status
    changes for one student asks the students service once, not per request.

    Only existence is cached, for ``STUDENT_CACHE_SECONDS`` (0 turns it off): a
    request for a student deleted meanwhile is still accepted and then rejected
    by the status service (``STUDENT_NOT_FOUND``), as it would be if the delete
    had come a moment after the 202.
    """

    MAX_ENTRIES = 100_000

    def setup(self) -> None:
        self.ttl = Settings.from_config(self.container.config).student_cache_seconds
        self.seen: dict[int, float] = {}

    def get_dependency(self, worker_ctx: Any) -> KnownStudents:
        return self

    def __contains__(self, student_id: int) -> bool:
        seen = self.seen.get(student_id)
        return seen is not None and time.monotonic() - seen < self.ttl

    def add(self, student_id: int) -> None:
        if self.ttl <= 0:
            return
        if len(self.seen) >= self.MAX_ENTRIES:
            self.seen.clear()
        self.seen[student_id] = time.monotonic()

    def discard(self, student_id: int) -> None:
        self.seen.pop(student_id, None)
