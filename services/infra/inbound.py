"""What comes in over AMQP is checked before it is decoded, and bad input is never silence.

nameko's consumer logs a message it cannot decode (not JSON, a refused content type such
as pickle or YAML) and acks it: an RPC caller waits for its own timeout, an event is gone.
Here every service's RPC requests and event deliveries pass through :class:`GuardedQueueConsumer`
first (nameko's queue consumer, with kombu's raw ``on_message`` hook instead of its
decoding callbacks):

- larger than ``MAX_MESSAGE_BYTES``, a content type other than JSON, undecodable, or (for
  RPC) not an object with ``args`` (a list) and ``kwargs`` (an object): refused before any
  worker sees it;
- a refused RPC request that names ``reply_to`` is answered at once with
  :class:`~services.exceptions.MalformedRequest` (same ``correlation_id``); one without
  ``reply_to``, and a refused event, is parked in ``<service>.dead-letters`` with the
  reason, content type, headers, routing and the raw body (base64, at most
  ``DEAD_LETTER_BODY_BYTES``, flagged when cut), where ``list_dead_letters`` shows it.

Services use this module's :data:`rpc` instead of nameko's, and
:func:`~services.infra.retry.reliable_event_handler` consumes through the same guard::

    class StudentsService:
        @rpc
        def get_student(self, student_id): ...
"""

from __future__ import annotations

import base64
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import eventlet
from nameko.amqp.publish import Publisher, get_connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import serialize
from nameko.messaging import QueueConsumer, QueueConsumerStopped
from nameko.rpc import Rpc, RpcConsumer, get_rpc_exchange

from services.exceptions import MalformedRequest
from services.infra import metrics, parking
from services.infra.settings import Settings
from services.infra.topology import rpc_queue

log = logging.getLogger(__name__)

JSON = "application/json"
LIVENESS_TIMEOUT = 60.0
EXIT_STALLED = 70  # EX_SOFTWARE: the supervisor restarts a service that exits with it


def raw_body(message: Any) -> bytes:
    """The message's body as it travelled. py-amqp hands over the body of a message that names a
    ``content_encoding`` (as kombu's and nameko's publishers do) decoded to ``str`` where it could:
    encoded back by the same codec, those are the same bytes."""
    body = message.body or b""
    if isinstance(body, str):
        try:
            return body.encode(message.content_encoding or "utf-8")
        except (LookupError, UnicodeError, TypeError, ValueError):  # a codec that will not go back
            return body.encode("utf-8", "surrogatepass")
    return bytes(body)


def refusal(message: Any, limit: int, rpc: bool) -> tuple[Any, str | None]:
    """``(body, None)`` for a message fit to handle, else ``(None, reason)``."""
    body = message.body or b""
    size = len(raw_body(message)) if isinstance(body, str) and not body.isascii() else len(body)
    if size > limit:
        return None, f"Message of {size} bytes is larger than the limit of {limit} bytes."
    if message.content_type != JSON:
        return None, f"Content type {message.content_type!r} is refused; send {JSON}."
    try:
        body = message.decode()
    except Exception as exc:
        return None, f"Body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})."
    if rpc and not (
        isinstance(body, dict) and isinstance(body.get("args"), list) and isinstance(body.get("kwargs"), dict)
    ):
        return None, 'An RPC request is a JSON object {"args": [...], "kwargs": {...}}.'
    return body, None


def parked_body(message: Any, limit: int) -> dict:
    """The dead letter's body: the raw bytes (base64, cut at ``limit``) and their description."""
    raw = raw_body(message)
    return {
        "raw_body": base64.b64encode(raw[:limit]).decode(),
        "raw_bytes": len(raw),
        "truncated": len(raw) > limit,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
    }


class StoppableQueueConsumer(QueueConsumer):
    """nameko's queue consumer, stoppable while it is still starting.

    Stopped before its consumers are ready (a SIGTERM that arrives while an instance starts,
    e.g. one the autoscaling launcher has just added), nameko's consumer lets the first of
    its providers through and fails every other with "Trying to re-send() an
    already-triggered event", which leaves the container to be killed instead of stopped.
    Here the second and later providers are let through as the first was, and the consumer
    thread nameko then ends with ``QueueConsumerStopped`` ends quietly (:meth:`run`).
    """

    # seconds without a sign of life (a look between two waits for messages, every second while
    # consuming; a connection attempt while reconnecting) before the consumer is taken for stuck
    liveness_timeout = LIVENESS_TIMEOUT

    stopped_before_start = False

    def start(self) -> None:
        if self.stopped_before_start:
            return
        self._alive_at = time.monotonic()
        self._watchdog = eventlet.spawn(self._watch)
        super().start()

    def stop(self) -> None:
        self._stop_watching()
        if getattr(self, "_gt", None) is None:
            # stopped before start() spawned the consumer thread (a SIGTERM while the service
            # starts): nothing consumes yet, nothing to end; a start() that comes after does
            # nothing, and whoever waits for the consumers learns it was stopped
            self.stopped_before_start = self._starting = True
            if not self._consumers_ready.ready():
                self._consumers_ready.send_exception(QueueConsumerStopped())
            return
        super().stop()

    def kill(self) -> None:
        self._stop_watching()
        super().kill()

    def _stop_watching(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.kill()

    def _alive(self) -> None:
        self._alive_at = time.monotonic()

    def on_iteration(self) -> None:
        self._alive()
        super().on_iteration()

    def on_connection_error(self, exc: Any, interval: Any) -> None:
        self._alive()
        super().on_connection_error(exc, interval)

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        self._alive()
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def _watch(self) -> None:
        """A consumer thread that has given no sign of life for ``liveness_timeout`` seconds is
        stuck (seen after a broker node was lost: its connection gone, no error raised, no
        reconnection, its queue unconsumed while the process went on answering RPC). Stopping
        the container would wait for that thread forever, so the process exits at once, as a
        liveness probe would have it killed: its supervisor starts it again, and what it held
        unacked goes back to its queues (nothing is acked before its work committed)."""
        while True:
            eventlet.sleep(min(self.liveness_timeout / 4, 5.0))
            if self._silent() > self.liveness_timeout:
                eventlet.sleep(2.0)  # the hub itself may have been held: give the thread its turn
                silent = self._silent()
                if silent > self.liveness_timeout and not self.should_stop:
                    self.stalled(silent)
                    return

    def _silent(self) -> float:
        return time.monotonic() - self._alive_at

    def stalled(self, silent: float) -> None:
        log.critical(
            "%s: a queue consumer gave no sign of life for %.0fs; exiting so that the service is started again",
            self.container.service_name,
            silent,
        )
        logging.shutdown()  # the line above is written before the process goes
        os._exit(EXIT_STALLED)

    def unregister_provider(self, provider: Any) -> None:
        if self.stopped_before_start or (
            not self._consumers_ready.ready() and self._last_provider_unregistered.ready()
        ):
            return  # never consumed (or all but this one gone before it did): nothing to cancel
        super().unregister_provider(provider)

    def run(self) -> None:
        """The consumer thread; stopped before it was ready, nameko ends it by raising
        ``QueueConsumerStopped`` in it, which the container would take for a crash (logged
        CRITICAL, the container killed instead of stopped): here that ends it as a stop."""
        try:
            super().run()
        except QueueConsumerStopped:
            log.debug("%s stopped while starting", self)

    def _handle_thread_exited(self, gt: Any) -> None:
        """As nameko's, but a thread that ended before it was ready without an error (see
        :meth:`run`) tells whoever waits for it (the container's start) that it was stopped."""
        exc = None
        try:
            gt.wait()
        except Exception as error:
            exc = error
        if not self._consumers_ready.ready():
            self._consumers_ready.send_exception(exc or QueueConsumerStopped())


class GuardedQueueConsumer(StoppableQueueConsumer):
    """nameko's queue consumer, with every delivery checked before it is decoded."""

    def setup(self) -> None:
        super().setup()
        config = self.container.config
        settings = Settings.from_config(config)
        self.max_bytes = settings.max_message_bytes
        self.parked_bytes = settings.dead_letter_body_bytes
        self.parking = parking.dead_letter_queue(self.container.service_name, settings)
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], declare=[self.parking])
        self.replies = Publisher(config[AMQP_URI_CONFIG_KEY])
        self.rpc_exchange = get_rpc_exchange(config)
        with get_connection(config[AMQP_URI_CONFIG_KEY]) as connection:
            self.parking.maybe_bind(connection.channel())
            self.parking.declare()

    def get_consumers(self, consumer_cls: Any, channel: Any) -> Any:
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_message = partial(self.on_raw_message, provider)
        return consumers

    def on_raw_message(self, provider: Any, message: Any) -> None:
        body, reason = refusal(message, self.max_bytes, isinstance(provider, RpcConsumer))
        if reason is None:
            self.handle_message(provider, body, message)
        else:
            self.container.spawn_managed_thread(partial(self.refuse, provider, message, reason))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu found the message broken before handing it over (e.g. bad compression)."""
        provider = next((p for p, c in self._consumers.items() if _owns(c, message)), None)
        self.container.spawn_managed_thread(partial(self.refuse, provider, message, f"Undecodable: {exc}"[:500]))

    def refuse(self, provider: Any, message: Any, reason: str) -> None:
        try:
            if isinstance(provider, RpcConsumer) and message.properties.get("reply_to"):
                self._answer(message, reason)
            else:
                self._park(provider, message, reason)
        except Exception:  # the broker is in trouble: keep the message for a later try
            log.exception("could not refuse a malformed message; requeueing it")
            self.requeue_message(message)
            return
        self.ack_message(message)

    def _answer(self, message: Any, reason: str) -> None:
        log.warning("refused an RPC request to %s: %s", message.delivery_info.get("routing_key"), reason)
        self.replies.publish(
            {"result": None, "error": serialize(MalformedRequest(reason, {"reason": reason}))},
            exchange=self.rpc_exchange,
            routing_key=message.properties["reply_to"],
            correlation_id=message.properties.get("correlation_id"),
            serializer="json",
        )
        metrics.REFUSED.labels(self.container.service_name, "rpc", "answered").inc()

    def _park(self, provider: Any, message: Any, reason: str) -> None:
        service = self.container.service_name
        is_rpc = isinstance(provider, RpcConsumer)
        handler = f"{service}.rpc" if is_rpc else f"{service}.{getattr(provider, 'method_name', '?')}"
        headers = {
            **{k: v for k, v in (message.headers or {}).items() if not k.startswith(parking.HEADER)},
            parking.ORIGINAL_EXCHANGE: message.delivery_info.get("exchange", ""),
            parking.ORIGINAL_ROUTING_KEY: message.delivery_info.get("routing_key", ""),
            parking.ERROR: f"MalformedRequest: {reason}",
            parking.QUEUE: provider.queue.name if provider is not None else "",
            parking.HANDLER: handler,
            parking.FAILED_AT: datetime.now(UTC).isoformat(),
            parking.MALFORMED: True,
        }
        log.error("parked a malformed message for %s in %s: %s", handler, self.parking.name, reason)
        self.publisher.publish(
            parked_body(message, self.parked_bytes),
            exchange=parking.DEFAULT_EXCHANGE,
            routing_key=self.parking.name,
            headers=headers,
            message_id=message.properties.get("message_id") or str(uuid.uuid4()),
            serializer="json",
            mandatory=True,
        )
        metrics.REFUSED.labels(service, "rpc" if is_rpc else "event", "parked").inc()
        metrics.PARKED.labels(service, "malformed").inc()


def _owns(consumer: Any, message: Any) -> bool:
    tag = message.delivery_info.get("consumer_tag")
    return tag is not None and tag in getattr(consumer, "_active_tags", {}).values()


class GuardedRpcConsumer(RpcConsumer):
    queue_consumer = GuardedQueueConsumer()

    def setup(self) -> None:
        super().setup()  # names, binds and registers ``rpc-<service>`` as nameko does ...
        # ... declared (when the queue consumer starts) with QUEUE_TYPE's arguments
        self.queue = rpc_queue(self.container.service_name, self.container.config)


class GuardedRpc(Rpc):
    rpc_consumer = GuardedRpcConsumer()


rpc = GuardedRpc.decorator
