"""Event handlers that take many deliveries per worker: one transaction and one round of acks for a batch.

:func:`~services.infra.retry.reliable_event_handler` runs a worker (and, in a handler that writes,
a transaction) per message. :func:`batched_event_handler` hands its method every delivery waiting
when a worker starts, up to ``batch_size``, as a list of :class:`Delivery` (payload and the
message's context), in the order they arrived; while that worker runs, the next batch gathers.
One batch at a time per handler and process, so batches are handled in arrival order too.

- When the method returns (its transaction committed), every message of the batch is acked;
  none before.
- When it raises, nothing of the batch is acked and its messages are handled again one by one,
  each by a worker of its own, in order: each that fails again retries or is parked exactly as
  under ``reliable_event_handler``, so one poison message never takes its batch-mates with it.
  The method must therefore be idempotent for a batch partly written (a redelivered message must
  be too, anyway).
- Its consumer has a connection of its own, with a prefetch of twice ``batch_size`` (per
  consumer, as quorum queues require), so that a whole batch waits while one is handled.

::

    @batched_event_handler("gateway", "status_change_requested", batch_size=500)
    def handle_status_change_requested(self, deliveries: list[Delivery]) -> None:
        ...  # one transaction for them all
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from eventlet.event import Event
from nameko.exceptions import ContainerBeingKilled

from services.infra import correlation, tracing
from services.infra.inbound import GuardedQueueConsumer
from services.infra.logs import worker_log
from services.infra.retry import ACKED, ReliableEventHandler

log = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass(frozen=True)
class Delivery:
    """One message of a batch: its decoded body and its nameko context data (``correlation_id``:
    always a sane one, made if none came; ``traceparent`` if the sender traced it, ...)."""

    payload: Any
    context: dict

    def stamped(self, items: list[dict]) -> list[dict]:
        """``items`` of this message, each given the message's correlation id and (traces on) its
        ``traceparent`` where it has none of its own: batch-mates keep their own, not the first's."""
        defaults = {correlation.KEY: self.context[correlation.KEY]}
        if tracing.enabled() and self.context.get(tracing.TRACEPARENT):
            defaults[tracing.TRACEPARENT] = self.context[tracing.TRACEPARENT]
        return [{**item, **{k: v for k, v in defaults.items() if not item.get(k)}} for item in items]


class BatchingQueueConsumer(GuardedQueueConsumer):
    """The guarded consumer on a connection of its own, for batched handlers: its prefetch is theirs,
    and a delivery is handed to its handler at once (the handler spawns the workers)."""

    @property
    def prefetch_count(self) -> int:
        return max((provider.prefetch for provider in self._providers), default=self.container.max_workers)

    def handle_message(self, provider: Any, body: Any, message: Any) -> None:
        provider.handle_message(body, message)


class BatchingEventHandler(ReliableEventHandler):
    queue_consumer = BatchingQueueConsumer()

    def __init__(self, source_service: str, event_type: str, batch_size: int = BATCH_SIZE, **kwargs: Any):
        super().__init__(source_service, event_type, **kwargs)
        self.batch_size = batch_size

    @property
    def prefetch(self) -> int:
        return 2 * self.batch_size

    def setup(self) -> None:
        super().setup()
        self.waiting: list[tuple[Any, Any]] = []  # (body, message), in delivery order
        self.drained = Event()
        self.drained.send(None)

    def stop(self) -> None:
        super().stop()  # no more deliveries ...
        self.drained.wait()  # ... and those already here handled (acked) while the connection is up

    def handle_message(self, body: Any, message: Any) -> None:
        self.waiting.append((body, message))
        if self.drained.ready():
            self.drained = Event()
            self.container.spawn_managed_thread(self._drain, identifier=f"{self.method_name} batches")

    def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.batch_size], self.waiting[self.batch_size :]
                if not self._run(batch) and len(batch) > 1:
                    log.warning(
                        "%s.%s failed for a batch of %d; handling its messages one by one",
                        self.container.service_name,
                        self.method_name,
                        len(batch),
                    )
                    for delivery in batch:
                        self._run([delivery])
        finally:
            self.drained.send(None)

    def _run(self, batch: list[tuple[Any, Any]]) -> bool:
        """One worker for ``batch``: True once it succeeded and its messages are acked. A single
        message that failed is retried or parked (and acked); a larger batch is left unacked."""
        deliveries = [Delivery(body, self._context(message)) for body, message in batch]
        done = Event()
        try:
            self.container.spawn_worker(
                self,
                (deliveries,),
                {},
                context_data=dict(deliveries[0].context),
                handle_result=partial(self._handle_batch_result, deliveries, [message for _, message in batch], done),
            )
        except ContainerBeingKilled:
            for _, message in batch:
                self.queue_consumer.requeue_message(message)
            return True
        return done.wait()

    def _context(self, message: Any) -> dict:
        context = self.unpack_message_headers(message)
        context[correlation.KEY] = correlation.sane(context.get(correlation.KEY)) or correlation.new_id()
        return context

    def _handle_batch_result(
        self, deliveries: list[Delivery], messages: list, done: Event, worker_ctx: Any, result: Any, exc_info: Any
    ):
        try:
            if exc_info is None:
                for message in messages:
                    self.queue_consumer.ack_message(message)
                self.consumed[ACKED].inc(len(messages))
                _log_batch_mates(worker_ctx, deliveries)
            elif len(messages) == 1:
                self.handle_message_processed(messages[0], result, exc_info)
        finally:
            done.send(exc_info is None)
        return result, exc_info


def _log_batch_mates(worker_ctx: Any, deliveries: list[Delivery]) -> None:
    """The worker's own line carries its first message's correlation id; each other message of the
    batch gets a line under its own, so that every request's id finds where it was handled."""
    if len(deliveries) < 2 or not worker_log.isEnabledFor(logging.INFO):
        return
    entrypoint, first = correlation.describe(worker_ctx), deliveries[0].context[correlation.KEY]
    for delivery in deliveries[1:]:
        with correlation.working_on(delivery.context[correlation.KEY], entrypoint):
            worker_log.info("%s: done in a batch of %d with %s", entrypoint, len(deliveries), first)


batched_event_handler = BatchingEventHandler.decorator
