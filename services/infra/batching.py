"""Event handlers that take many deliveries per worker: one transaction and one round of acks for a batch.

:func:`~services.infra.retry.reliable_event_handler` runs a worker (and, in a handler that writes,
a transaction) per message. :func:`batched_event_handler` hands its method every delivery waiting
when a worker starts, up to ``batch_size``, as a list of :class:`Delivery` (payload and the
message's context), in the order they arrived; while that worker runs, the next batch gathers.
One batch at a time per handler and process, so batches are handled in arrival order too.

- When the method returns (its transaction committed), every message of the batch is acked;
  none before. One ``basic.ack`` with ``multiple`` acks the whole batch when no other message of
  the channel older than the batch's last is still unsettled (a malformed one being parked, say);
  otherwise each of the batch's messages is acked on its own.
- When it raises, nothing of the batch is acked and its messages are handled again one by one,
  each by a worker of its own, in order: each that fails again retries or is parked exactly as
  under ``reliable_event_handler``, so one poison message never takes its batch-mates with it.
  The method must therefore be idempotent for a batch partly written (a redelivered message must
  be too, anyway).
- Its consumer has a connection of its own, with a prefetch of twice ``batch_size`` (per
  consumer, as quorum queues require), so that a whole batch waits while one is handled.

::

    @batched_event_handler("gateway", "status_change_requested", batch_size=1000)
    def handle_status_change_requested(self, deliveries: list[Delivery]) -> None:
        ...  # one transaction for them all
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from amqp.exceptions import ConnectionError as AmqpConnectionError
from eventlet.event import Event
from nameko.exceptions import ContainerBeingKilled

from services.infra import correlation, tracing
from services.infra.inbound import GuardedQueueConsumer
from services.infra.logs import worker_log
from services.infra.retry import ACKED, ReliableEventHandler

log = logging.getLogger(__name__)

BATCH_SIZE = 1000  # draining single requests, 12 to 41% faster than 500 (half the commits; benchmarks/README)
# for the consumers of events that each carry many changes (``student_status_changed``): one lookup of
# their students and one transaction for a burst or a backlog, not one each
EVENTS_A_BATCH = 50


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
    a delivery is handed to its handler at once (the handler spawns the workers), and a batch is
    acked with one ``basic.ack`` where that acks nothing else (:meth:`ack_messages`).

    A multiple ack settles every delivery of the channel up to its tag, so the consumer keeps the
    tags it has received and not yet settled (acked or requeued), per channel."""

    def setup(self) -> None:
        super().setup()
        self.unsettled: dict[Any, set[int]] = {}  # channel -> delivery tags received, not yet settled

    @property
    def prefetch_count(self) -> int:
        return max((provider.prefetch for provider in self._providers), default=self.container.max_workers)

    def handle_message(self, provider: Any, body: Any, message: Any) -> None:
        provider.handle_message(body, message)

    def on_raw_message(self, provider: Any, message: Any) -> None:
        self._received(message)
        super().on_raw_message(provider, message)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._received(message)
        super().on_decode_error(message, exc)

    def _received(self, message: Any) -> None:
        channel = message.channel
        if channel not in self.unsettled:  # a new channel: those of lost connections are done with
            for gone in [c for c in self.unsettled if c.connection is None]:
                del self.unsettled[gone]
            self.unsettled[channel] = set()
        self.unsettled[channel].add(message.delivery_tag)

    def _settled(self, message: Any) -> None:
        tags = self.unsettled.get(message.channel)
        if tags is not None:
            tags.discard(message.delivery_tag)

    def ack_message(self, message: Any) -> None:
        self._settled(message)
        super().ack_message(message)

    def requeue_message(self, message: Any) -> None:
        self._settled(message)
        super().requeue_message(message)

    def ack_messages(self, messages: list) -> None:
        """Ack ``messages`` (a batch, in delivery order): per channel, one ``basic.ack`` with
        ``multiple`` up to the last one's tag when every unsettled delivery up to it is one of
        them, else one ``basic.ack`` each. A channel whose connection is gone is skipped, as
        nameko's ``ack_message`` does: the broker has taken those messages back."""
        by_channel: dict[Any, list] = {}
        for message in messages:
            by_channel.setdefault(message.channel, []).append(message)
        for channel, batch in by_channel.items():
            if len(batch) == 1 or not self._ack_together(channel, batch):
                for message in batch:
                    self.ack_message(message)

    def _ack_together(self, channel: Any, batch: list) -> bool:
        tags = {message.delivery_tag for message in batch}
        last = max(tags)
        unsettled = self.unsettled.get(channel, set())
        if any(tag < last for tag in unsettled - tags):
            return False  # an older delivery not in the batch is still being handled
        unsettled -= tags
        if channel.connection:
            try:
                channel.basic_ack(last, multiple=True)
            except AmqpConnectionError:  # the connection closed meanwhile: the broker takes them back
                return True
            for message in batch:
                message._state = "ACK"  # as kombu's own ack marks it: a second ack would raise here
        return True


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
                self.queue_consumer.ack_messages(messages)
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
