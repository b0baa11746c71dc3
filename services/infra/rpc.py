"""RPC with a deadline: the one way mensageria code calls a service.

nameko 2.x's ``RpcProxy`` waits for a reply forever. :class:`TimedRpcProxy`
gives every call the configured ``RPC_TIMEOUT`` and turns the ways a call can
fail into typed errors: :class:`BackendTimeout`, :class:`ServiceUnavailable`::

    class CertificatesService:
        students = TimedRpcProxy("students")

        @event_handler(...)
        def handle(self, payload):
            student = self.students.get_student(payload["student_id"])

A background loop of the same service (no worker of its own) calls through
``TimedRpcProxy.background()``. Outside a service container (``nameko shell``,
command-line tools) :func:`standalone_proxy` is nameko's ``ClusterRpcProxy`` with
the same ``RPC_TIMEOUT``.

Replies come back through a transient queue (:class:`TransientReplies`), so that a caller whose
broker node is lost finds its reply queue again on the node it moves to; a service's reply path is
probed (:class:`TransientReplyListener`) and mended when replies no longer reach it.

A call carries the correlation id in hand (:func:`services.infra.correlation.current`):
the worker's, or the one a loop or a handler set with ``working_on`` for the row or the
item of a batch it is working on; while traces are on (:mod:`services.infra.tracing`) each
call is a CLIENT span, whose ``traceparent`` the call carries.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import eventlet
from amqp.exceptions import ChannelError, RecoverableConnectionError
from amqp.exceptions import ConnectionError as AmqpConnectionError
from eventlet.queue import Empty, LightQueue
from kombu import Queue
from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.containers import WorkerContext
from nameko.exceptions import MethodNotFound, RemoteError, UnknownService
from nameko.extensions import Entrypoint
from nameko.rpc import (
    RPC_REPLY_QUEUE_TEMPLATE,
    RPC_REPLY_QUEUE_TTL,
    ReplyListener,
    RpcProxy,
    ServiceProxy,
    get_rpc_exchange,
)
from nameko.standalone.rpc import ClusterRpcProxy, SingleThreadedReplyListener

from services.exceptions import BackendTimeout, ServiceUnavailable
from services.infra import correlation, metrics, tracing
from services.infra.inbound import StoppableQueueConsumer
from services.infra.settings import Settings

log = logging.getLogger(__name__)

BROKER_ERRORS = (OSError, OperationalError, AmqpConnectionError)
PROBE_PREFIX = "reply-probe-"
RECONNECT_TIMEOUT = 30.0  # seconds a probe waits for the reply consumer it told to connect anew


class TimedServiceProxy:
    """``proxy.method(*args)`` with a deadline; failures become gateway errors."""

    def __init__(self, proxy: Any, service: str, timeout: float):
        self._proxy = proxy
        self._service = service
        self._timeout = timeout

    def __getattr__(self, method: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(method, self._timeout, *args, **kwargs)

        return call

    def call(self, method: str, timeout: float, *args: Any, **kwargs: Any) -> Any:
        started, outcome = time.perf_counter(), metrics.ERROR
        try:
            with tracing.span(f"{self._service}/{method}", tracing.CLIENT, attributes=self._span_attributes(method)):
                result = self._call(method, timeout, *args, **kwargs)
            outcome = metrics.OK
            return result
        except Exception as exc:
            outcome = metrics.TIMEOUT if isinstance(exc, BackendTimeout) else metrics.outcome_of(exc)
            raise
        finally:
            metrics.child(metrics.RPC_CLIENT_DURATION, self._service, method, outcome).observe(
                time.perf_counter() - started
            )

    def _span_attributes(self, method: str) -> dict | None:
        if not tracing.enabled():
            return None
        return {"rpc.system": "nameko", "rpc.service": self._service, "rpc.method": method}

    def _call(self, method: str, timeout: float, *args: Any, **kwargs: Any) -> Any:
        deadline = eventlet.Timeout(timeout)
        try:
            return getattr(_carrying_context(self._proxy), method)(*args, **kwargs)
        except eventlet.Timeout as exc:
            if exc is not deadline:
                raise
            _probe_soon(self._proxy)  # no answer: is the reply path still whole?
            raise BackendTimeout(
                f"The {self._service} service did not answer within {timeout:g}s.",
                {"service": self._service, "timeout": timeout},
            ) from None
        except UnknownService:
            raise ServiceUnavailable(
                f"The {self._service} service is not running.", {"service": self._service}
            ) from None
        except MethodNotFound:  # an instance that is stopping has withdrawn its entrypoints
            raise ServiceUnavailable(
                f"The {self._service} service is stopping or does not offer {method}.",
                {"service": self._service, "method": method},
            ) from None
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable("The message broker is unreachable.", {"reason": str(exc)}) from None
        except RemoteError as exc:  # the service failed unexpectedly (it logged why)
            raise ServiceUnavailable(
                f"The {self._service} service failed; try again.", {"service": self._service, "reason": exc.exc_type}
            ) from None
        except ChannelError:  # e.g. no RPC exchange yet: no service has ever started
            raise ServiceUnavailable(
                f"The {self._service} service is not running.", {"service": self._service}
            ) from None
        finally:
            deadline.cancel()


class _CallContext:
    """A worker context as nameko's ``MethodProxy`` reads it (``container``, ``context_data``),
    with other context data: a copy, since a background proxy's context is shared."""

    def __init__(self, worker_ctx: WorkerContext, overrides: dict):
        self.container = worker_ctx.container
        self.context_data = {**worker_ctx.context_data, **overrides}


def _carrying_context(proxy: Any) -> Any:
    """``proxy``, or one whose calls carry the id in hand when :func:`correlation.working_on`
    changed it (an item of a batch, a background loop's row), and the call's span (its
    ``traceparent``) while traces are on."""
    if not isinstance(proxy, ServiceProxy):
        return proxy
    overrides = tracing.carrier_of() if tracing.enabled() else {}
    correlation_id = correlation.current()
    if correlation_id not in (None, proxy.worker_ctx.data.get(correlation.KEY)):
        overrides[correlation.KEY] = correlation_id
    if not overrides:
        return proxy
    context = _CallContext(proxy.worker_ctx, overrides)
    return ServiceProxy(context, proxy.service_name, proxy.reply_listener, **proxy.options)


class _BackgroundCall(Entrypoint):
    """What a call from a background loop names as its origin (nameko's call id stack)."""

    method_name = "background"


class TransientReplies:
    """A reply listener whose queue is transient (nameko's own name, binding and expiry otherwise).

    nameko 2.x declares ``rpc.reply-<caller>-<uuid>`` durable. On a cluster a durable classic queue
    lives on the node that declared it: once that node is lost, the queue can be neither consumed
    nor declared again on another node (``NOT_FOUND - home node ... is down``) until the node is
    back, and the caller, reconnected elsewhere, never gets a reply again. RabbitMQ deletes a lost
    node's transient queues, so this one is simply declared again where the caller reconnects (a
    reply on its way when the node died is lost, and that call times out, as it would have anyway).
    """

    def setup(self) -> None:
        # ReplyListener.setup, with durable=False; the queue exists before the consumer sees it
        reply_queue_uuid = uuid.uuid4()
        self.routing_key = str(reply_queue_uuid)
        self.queue = Queue(
            RPC_REPLY_QUEUE_TEMPLATE.format(self.container.service_name, reply_queue_uuid),
            exchange=get_rpc_exchange(self.container.config),
            routing_key=self.routing_key,
            durable=False,
            queue_arguments={"x-expires": RPC_REPLY_QUEUE_TTL},
        )
        self.queue_consumer.register_provider(self)


class ReplyConsumer(StoppableQueueConsumer):
    """The reply listener's queue consumer, which can be told to connect anew: it then leaves its
    connection and, on a new one, declares and binds its queue again and consumes from it."""

    def __init__(self) -> None:
        super().__init__()
        self._reconnect: str | None = None
        self.connects = 0  # times its consumers were (re)started on a connection

    def reconnect(self, reason: str, timeout: float) -> bool:
        """Connect anew within a second (at the consumer's next look, between two waits for
        messages); whether it consumes again on a new connection within ``timeout`` seconds."""
        connects, self._reconnect = self.connects, reason
        with eventlet.Timeout(timeout, False):
            while self.connects == connects:
                eventlet.sleep(0.05)
            return True
        return False

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        super().on_consume_ready(connection, channel, consumers, **kwargs)
        self.connects += 1

    def on_iteration(self) -> None:
        super().on_iteration()
        reason, self._reconnect = self._reconnect, None
        if reason is not None and not self.should_stop:
            # kombu's consumer loop takes this as a lost connection: it closes it and starts again
            raise RecoverableConnectionError(f"reply path mended: {reason}")


class TransientReplyListener(TransientReplies, ReplyListener):
    """A service's reply listener (shared by its :class:`TimedRpcProxy` dependencies), whose reply
    path is probed.

    Every ``REPLY_PROBE_SECONDS`` (and at once after a call timed out) it sends itself a reply
    through the RPC exchange, with ``mandatory`` set, and waits up to ``RPC_TIMEOUT`` for it. A
    probe the broker cannot route (the queue or its binding is gone) or that never arrives (the
    consumer is attached to a queue that no longer receives, as after a node holding it was lost
    while this process moved to another) makes the consumer connect anew, which declares and binds
    the queue again: every later call gets its reply. Without this a caller whose reply path broke
    that way would time out on every call until restarted. A probe costs one small message.
    """

    queue_consumer = ReplyConsumer()

    def setup(self) -> None:
        super().setup()
        config = self.container.config
        settings = Settings.from_config(config)
        self.probe_interval = settings.reply_probe_seconds
        self.probe_timeout = settings.rpc_timeout
        self.exchange = get_rpc_exchange(config)
        self.probes = Publisher(config[AMQP_URI_CONFIG_KEY], mandatory=True, retry=False)
        self.wake: LightQueue = LightQueue(maxsize=1)
        self.prober = None

    def start(self) -> None:
        super().start()
        if self.probe_interval > 0:
            self.prober = self.container.spawn_managed_thread(self._probe_forever, identifier="reply-probe")

    def stop(self) -> None:
        if self.prober is not None:
            self.prober.kill()
        super().stop()

    def probe_soon(self) -> None:
        if self.wake.empty():
            self.wake.put_nowait(True)

    def _probe_forever(self) -> None:
        while True:
            with contextlib.suppress(Empty):  # the interval passed, or a call timed out
                self.wake.get(timeout=self.probe_interval)
            problem = self.probe()
            if problem is not None:
                service = self.container.service_name
                log.warning("%s: the reply path is broken (%s); its consumer connects anew", service, problem)
                metrics.REPLY_PATH_MENDED.labels(service, problem.split(":")[0]).inc()
                if not self.queue_consumer.reconnect(problem, timeout=RECONNECT_TIMEOUT):
                    log.warning("%s: the reply consumer is not consuming yet; probing again", service)
                with contextlib.suppress(Empty):  # what asked for a probe meanwhile asked about the old path
                    self.wake.get_nowait()

    def probe(self) -> str | None:
        """``None`` while replies reach this listener (or the broker cannot be asked); else what is wrong."""
        correlation_id = f"{PROBE_PREFIX}{uuid.uuid4()}"
        arrived = self.get_reply_event(correlation_id)
        try:
            self.probes.publish(
                {"result": None, "error": None},
                exchange=self.exchange,
                routing_key=self.routing_key,
                correlation_id=correlation_id,
                expiration=self.probe_timeout,
                serializer="json",
            )
            with eventlet.Timeout(self.probe_timeout, False):
                arrived.wait()
                return None
            return f"unanswered: a probe did not come back within {self.probe_timeout:g}s"
        except UndeliverableMessage:
            return "unroutable: the reply queue or its binding is gone"
        except BROKER_ERRORS as exc:  # no broker to ask: the consumer reconnects by itself
            log.debug("reply probe not sent: %s", exc)
            return None
        finally:
            self._reply_events.pop(correlation_id, None)


def _probe_soon(proxy: Any) -> None:
    listener = getattr(proxy, "reply_listener", None)
    if isinstance(listener, TransientReplyListener):
        listener.probe_soon()


class TransientSingleThreadedReplyListener(TransientReplies, SingleThreadedReplyListener):
    """The standalone proxy's reply listener."""


class TimedRpcProxy(RpcProxy):
    """nameko's ``RpcProxy`` with the configured ``RPC_TIMEOUT`` on every call
    (nameko 2.x service proxies have no timeout of their own), and replies through
    a transient queue (:class:`TransientReplies`)."""

    rpc_reply_listener = TransientReplyListener()

    def setup(self) -> None:
        super().setup()
        self.timeout = Settings.from_config(self.container.config).rpc_timeout

    def get_dependency(self, worker_ctx: Any) -> TimedServiceProxy:
        return TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, self.timeout)

    def background(self) -> TimedServiceProxy:
        """The proxy for the service's background loops, which run outside any worker."""
        return self.get_dependency(WorkerContext(self.container, service=None, entrypoint=_BackgroundCall))


def standalone_proxy(config: dict) -> ClusterRpcProxy:
    """nameko's standalone proxy (``with standalone_proxy(config) as rpc: ...``), giving up
    after ``RPC_TIMEOUT`` with nameko's ``RpcTimeout``."""
    return ClusterRpcProxy(
        config,
        timeout=Settings.from_config(config).rpc_timeout,
        reply_listener_cls=TransientSingleThreadedReplyListener,
    )
