"""Publish and subscribe to Nameko events from code that does not run Nameko.

Nameko events go to the topic exchange ``<source>.events`` with the event type
as routing key and a JSON payload (``nameko/events.py``). A Nameko service
handles what :class:`EventPublisher` publishes with
``@event_handler(source, event_type)``; :class:`EventSubscriber` receives what a
Nameko ``EventDispatcher`` (or the services' outbox) dispatches::

    publisher = EventPublisher(url)
    publisher.publish("gateway", "status_change_requested", {...})

    def on_change(payload, correlation_id):     # or def on_change(payload)
        for change in payload["changes"]:      # each change also has its own "correlation_id"
            ...

    subscriber = EventSubscriber(url, "status", "student_status_changed",
                                 "evt-status-student_status_changed--billing", on_change)
    threading.Thread(target=subscriber.run).start()
    ...
    subscriber.stop()

Every event carries a correlation id, the header ``nameko.correlation_id``:
:meth:`EventPublisher.publish` sends one (its ``correlation_id=``, the publisher's
``context_data``'s, or a new, time-ordered UUID) and returns it, and a subscriber's callback that
has a parameter named ``correlation_id`` receives the event's (None if it came
without one). A message carrying a batch (``student_status_changed``'s
``{"changes": [...]}``) has the first change's id in its header; each change names
its own in its ``correlation_id`` field.

With an OpenTelemetry SDK installed in your program, a publish is a PRODUCER span and a
callback runs in a CONSUMER span, child of the span that published the event (the header
``nameko.traceparent``; each change of a batch names its own ``traceparent`` too): see
:mod:`clients.tracing`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pika
from pika.exceptions import AMQPConnectionError, AMQPError, UnroutableError

from clients import codec, tracing
from clients.connection import (
    DEFAULT_URL,
    Link,
    PerThread,
    broker_error,
    close_quietly,
    connection_parameters,
    node_urls,
)
from clients.errors import UnroutableEvent
from clients.rpc import CORRELATION_ID, HEADER_PREFIX, context_headers, correlation_id_for

log = logging.getLogger(__name__)


def event_exchange(source_service: str) -> str:
    """``<source>.events``, as nameko names it (``nameko.standalone.events.get_event_exchange``)."""
    return f"{source_service}.events"


def _declare_exchange(channel: Any, source_service: str) -> str:
    exchange = event_exchange(source_service)
    # the same arguments as nameko's declaration, or the broker refuses one of them
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    return exchange


class EventPublisher:
    """Publishes events as a Nameko service would; thread-safe (a connection per thread).

    Every event is persistent and confirmed by the broker before
    :meth:`publish` returns. It is also **mandatory by default**: an event that
    no queue receives — nothing subscribes to ``source.event_type`` yet — raises
    :class:`UnroutableEvent` instead of vanishing, as RabbitMQ silently drops
    unroutable messages. Nameko's own dispatcher does not do this; pass
    ``mandatory=False`` (here or per publish) for fire-and-forget notifications.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        mandatory: bool = True,
        context_data: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
    ):
        self.url = url
        self.mandatory = mandatory
        self.context_data = dict(context_data or {})
        self._links = PerThread(url, "EventPublisher", timeout, self._prepare)

    def publish(
        self,
        source_service: str,
        event_type: str,
        payload: Any,
        *,
        mandatory: bool | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish ``payload`` (JSON-serialisable) as ``source_service``'s ``event_type`` event,
        with ``correlation_id`` (default: ``context_data``'s, else a new UUID).

        Returns the event's correlation id once the broker has confirmed it. Raises
        :class:`UnroutableEvent` (mandatory and no queue bound), :class:`BrokerError` or
        :class:`BrokerUnavailable`; ``ValueError`` for a ``correlation_id`` the services
        would not accept (1 to 128 visible ASCII characters).
        """
        mandatory = self.mandatory if mandatory is None else mandatory
        correlation_id = correlation_id_for(correlation_id, self.context_data)
        exchange = event_exchange(source_service)
        with tracing.span(
            f"publish {exchange}", tracing.PRODUCER, tracing.messaging_attributes("publish", exchange, event_type)
        ) as span:
            self._publish(source_service, event_type, payload, mandatory, correlation_id, span)
        return correlation_id

    def _publish(
        self, source_service: str, event_type: str, payload: Any, mandatory: bool, correlation_id: str, span: Any
    ) -> None:
        link = self._links.get()
        declared: set[str] = link.state["declared"]
        try:
            if source_service not in declared:
                _declare_exchange(link.channel, source_service)
                declared.add(source_service)
            link.channel.basic_publish(
                event_exchange(source_service),
                event_type,
                codec.dumps(payload),
                pika.BasicProperties(
                    content_type=codec.CONTENT_TYPE,
                    content_encoding=codec.CONTENT_ENCODING,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    headers={**context_headers(self.context_data, correlation_id), **tracing.headers_of(span)},
                ),
                mandatory=mandatory,
            )
        except UnroutableError:
            raise UnroutableEvent(
                f"No queue receives {source_service}.{event_type}: nothing subscribes to it",
                {"source_service": source_service, "event_type": event_type},
            ) from None
        except AMQPError as exc:
            self._links.discard()
            raise broker_error(exc, f"publish {source_service}.{event_type}") from exc

    def close(self) -> None:
        """Close this thread's connection (and those of threads that have ended)."""
        self._links.close()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def _prepare(link: Link) -> None:
        link.state["declared"] = set()


class EventSubscriber:
    """Consumes ``source_service``'s ``event_type`` events from a durable queue.

    ``queue_name`` is this subscriber's queue: durable, shared by every instance
    of the subscriber (competing consumers, like a Nameko ``SERVICE_POOL``
    handler), and kept while the subscriber is stopped, so events published
    meanwhile wait for it. ``queue_arguments`` are declared with it: on a cluster,
    ``{"x-queue-type": "quorum"}`` makes it a replicated queue that outlives the
    node it was declared on (a classic queue lives on one node: while that node is
    down, it can neither be consumed nor declared again). ``callback(payload)`` runs in the thread that called
    :meth:`run`, for one message at a time; up to ``prefetch`` more wait in
    memory. A callback with a parameter named ``correlation_id``
    (``def on_change(payload, correlation_id)``) is also given the event's
    correlation id, or None if it came without one.

    Delivery is at least once, so make the callback idempotent:

    - the message is acked only after ``callback`` returns;
    - if ``callback`` raises, the error is logged and, after ``retry_delay``
      seconds, the message is requeued (nack, requeue): a failing callback
      never loses an event, and the delay keeps a persistently failing one
      from spinning. To drop a message you cannot handle, catch the error in
      the callback and return;
    - a body that is not JSON is rejected without requeue (logged);
    - if the connection is lost, :meth:`run` reconnects every
      ``reconnect_delay`` seconds (to the first node of ``url`` that answers,
      when it lists several); unacked messages are redelivered.

    :meth:`run` blocks until :meth:`stop` is called (from any thread); the
    message being handled is finished first. :attr:`ready` is set once the
    queue is declared, bound and consumed from.
    """

    def __init__(
        self,
        url: str,
        source_service: str,
        event_type: str,
        queue_name: str,
        callback: Callable[..., None],
        prefetch: int = 10,
        retry_delay: float = 1.0,
        reconnect_delay: float = 1.0,
        queue_arguments: Mapping[str, Any] | None = None,
    ):
        node_urls(url)  # a URL naming no node fails here, not in run()
        self.url = url
        self.source_service = source_service
        self.event_type = event_type
        self.queue_name = queue_name
        self.queue_arguments = dict(queue_arguments or {})
        self.callback = callback
        self._with_correlation_id = _has_parameter(callback, CORRELATION_ID)
        self.prefetch = prefetch
        self.retry_delay = retry_delay
        self.reconnect_delay = reconnect_delay
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None

    def run(self) -> None:
        """Consume until :meth:`stop`; reconnects when the connection is lost.

        Other errors (the queue exists with other arguments, access refused)
        end ``run()`` with that error. A stopped subscriber stays stopped:
        make a new one (same ``queue_name``) to consume again.
        """
        while not self._stopping.is_set():
            try:
                self._consume()
            except AMQPConnectionError as exc:
                log.warning("%s: connection lost (%r); reconnecting in %ss", self, exc, self.reconnect_delay)
            else:
                if not self._stopping.is_set():
                    log.warning("%s: cancelled by the broker; resubscribing in %ss", self, self.reconnect_delay)
            finally:
                self.ready.clear()
            self._stopping.wait(self.reconnect_delay)

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread, and before ``run()`` has connected."""
        self._stopping.set()
        connection = self._connection
        if connection is None:
            return
        with contextlib.suppress(AMQPError):  # already closed: run() is on its way out
            connection.add_callback_threadsafe(self._halt)

    def __repr__(self) -> str:
        return f"<EventSubscriber {self.source_service}.{self.event_type} -> {self.queue_name}>"

    def _consume(self) -> None:
        parameters = connection_parameters(self.url, f"EventSubscriber {self.queue_name}", 10.0)
        connection = self._connection = pika.BlockingConnection(parameters)
        try:
            channel = self._channel = connection.channel()
            exchange = _declare_exchange(channel, self.source_service)
            channel.queue_declare(self.queue_name, durable=True, arguments=self.queue_arguments or None)
            channel.queue_bind(self.queue_name, exchange, routing_key=self.event_type)
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(self.queue_name, self._on_message)
            self.ready.set()
            if not self._stopping.is_set():  # else stop() came before the connection existed
                channel.start_consuming()
        finally:
            self._connection = self._channel = None
            close_quietly(connection)

    def _halt(self) -> None:
        # runs in run()'s thread, between two messages
        if self._channel is not None and self._channel.is_open:
            self._channel.stop_consuming()

    def _on_message(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        try:
            payload = codec.loads(body)
        except ValueError:
            log.error("%s: rejecting a message that is not JSON: %r", self, body[:200])
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        try:
            exchange = event_exchange(self.source_service)
            attributes = tracing.messaging_attributes("process", exchange, self.event_type)
            name = f"process {self.source_service}.{self.event_type}"
            with tracing.span(name, tracing.CONSUMER, attributes, headers=properties.headers or {}):
                if self._with_correlation_id:
                    self.callback(payload, correlation_id=_correlation_id(properties))
                else:
                    self.callback(payload)
        except Exception:
            log.exception("%s: callback failed; requeueing in %ss", self, self.retry_delay)
            channel.connection.sleep(self.retry_delay)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        channel.basic_ack(method.delivery_tag)


def _has_parameter(callback: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(callback).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): the plain form
        return False


def _correlation_id(properties: pika.BasicProperties) -> str | None:
    value = (properties.headers or {}).get(f"{HEADER_PREFIX}.{CORRELATION_ID}")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value if isinstance(value, str) else None
