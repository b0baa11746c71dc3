"""Event handlers that retry through the broker and park what keeps failing.

nameko's ``@event_handler`` acks a message whose handler raised (the event is
lost) or, with ``requeue_on_error``, redelivers it at once, forever.
:func:`reliable_event_handler` instead:

1. acks only after the handler returned (its transaction committed);
2. on failure republishes the event (confirmed) to a delay queue of the
   handler's own queue — ``<queue>.retry.<ms>ms``, a TTL queue that dead-letters
   back to ``<queue>`` — with exponential delays (``EVENT_RETRY_BASE_DELAY`` times 1, 4, 16, ...);
   no worker sleeps;
3. after ``EVENT_RETRY_ATTEMPTS`` attempts (at once for an event that fails
   validation) parks it in ``<service>.dead-letters``
   with the error, the attempt count and the original routing, where
   :class:`DeadLetterQueue` lists, replays and purges it.

Only then is the original message acked, so a crash in between redelivers it::

    @reliable_event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload): ...
"""

from __future__ import annotations

import logging
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from kombu import Queue
from marshmallow import ValidationError
from nameko.amqp.publish import Publisher, get_connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler

from services.exceptions import ValidationFailed
from services.infra import metrics
from services.infra.inbound import GuardedQueueConsumer
from services.infra.parking import (
    ATTEMPT,
    DEFAULT_EXCHANGE,
    ERROR,
    FAILED_AT,
    HANDLER,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    QUEUE,
    TRACEBACK,
    dead_letter_queue,
)
from services.infra.queues import delay_arguments
from services.infra.settings import Settings
from services.infra.topology import handler_queue

log = logging.getLogger(__name__)

BACKOFF_FACTOR = 4
# what became of an event once its handler finished (mensageria_messaging_client_consumed_messages_total)
ACKED, RETRIED, DEAD_LETTERED, REQUEUED = "acked", "retried", "dead_lettered", "requeued"
OUTCOMES = (ACKED, RETRIED, DEAD_LETTERED, REQUEUED)

# retrying cannot help: an event that fails validation is parked at once
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValidationFailed, ValidationError)


def retry_delays(settings: Settings) -> list[float]:
    """Seconds to wait before each retry: one fewer than the attempts."""
    base = settings.event_retry_base_delay
    return [base * BACKOFF_FACTOR**n for n in range(settings.event_retry_attempts - 1)]


def delay_queue(queue_name: str, seconds: float, settings: Settings) -> Queue:
    milliseconds = max(int(seconds * 1000), 1)
    return Queue(
        f"{queue_name}.retry.{milliseconds}ms",  # the TTL is in the name: a new delay is a new queue
        exchange=DEFAULT_EXCHANGE,
        routing_key=f"{queue_name}.retry.{milliseconds}ms",
        durable=True,
        queue_arguments=delay_arguments(settings, milliseconds, queue_name),
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


class ReliableEventHandler(EventHandler):
    queue_consumer = GuardedQueueConsumer()  # malformed deliveries are parked, not dropped

    def setup(self) -> None:
        super().setup()  # names, binds and registers the handler's queue as nameko does ...
        config = self.container.config
        service = self.container.service_name
        # ... declared (when the queue consumer starts) with QUEUE_TYPE's arguments
        self.queue = handler_queue(self.queue, service, config)
        settings = Settings.from_config(config)
        self.delays = retry_delays(settings)
        self.delay_queues = [delay_queue(self.queue.name, delay, settings) for delay in self.delays]
        self.parking = dead_letter_queue(service, settings)
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], declare=[*self.delay_queues, self.parking])
        with get_connection(config[AMQP_URI_CONFIG_KEY]) as connection:
            channel = connection.channel()
            for queue in (*self.delay_queues, self.parking):
                queue.maybe_bind(channel)
                queue.declare()
        self.consumed = {outcome: metrics.CONSUMED.labels(service, self.method_name, outcome) for outcome in OUTCOMES}

    def handle_message_processed(self, message: Any, result: Any = None, exc_info: Any = None) -> None:
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            self.consumed[ACKED].inc()
            return
        try:
            outcome = self._retry_or_park(message, exc_info[1])
        except Exception:  # the broker is in trouble: leave the event where it is
            log.exception("could not reschedule a failed %s event; requeueing it", self.event_type)
            self.queue_consumer.requeue_message(message)
            self.consumed[REQUEUED].inc()
            return
        self.queue_consumer.ack_message(message)
        self.consumed[outcome].inc()
        if outcome == DEAD_LETTERED:
            metrics.PARKED.labels(self.container.service_name, "failed").inc()

    def _retry_or_park(self, message: Any, exc: BaseException) -> str:
        """Republish the failed event to its next delay queue or to the dead letters: which one it was."""
        headers = dict(message.headers or {})
        attempt = int(headers.get(ATTEMPT, 1))
        headers.setdefault(ORIGINAL_EXCHANGE, message.delivery_info.get("exchange", ""))
        headers.setdefault(ORIGINAL_ROUTING_KEY, message.delivery_info.get("routing_key", ""))
        headers[ERROR] = _short(exc)
        handler = f"{self.container.service_name}.{self.method_name}"
        if attempt <= len(self.delay_queues) and not isinstance(exc, PERMANENT_ERRORS):
            target, outcome = self.delay_queues[attempt - 1], RETRIED
            headers[ATTEMPT] = attempt + 1
            log.warning(
                "%s failed (attempt %d): %s; retrying in %.1fs",
                handler,
                attempt,
                headers[ERROR],
                self.delays[attempt - 1],
            )
        else:
            target, outcome = self.parking, DEAD_LETTERED
            headers.update(
                {
                    QUEUE: self.queue.name,
                    HANDLER: handler,
                    FAILED_AT: datetime.now(UTC).isoformat(),
                    TRACEBACK: "".join(traceback.format_exception(exc))[-4000:],
                }
            )
            log.error("%s failed %d times: %s; parked in %s", handler, attempt, headers[ERROR], target.name)
        self.publisher.publish(
            message.payload,
            exchange=DEFAULT_EXCHANGE,
            routing_key=target.name,
            headers=headers,
            message_id=message.properties.get("message_id") or str(uuid.uuid4()),
            mandatory=True,
        )
        return outcome


reliable_event_handler = ReliableEventHandler.decorator
