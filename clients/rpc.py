"""Call Nameko RPC methods from code that does not run Nameko (no eventlet).

::

    from clients import RpcClient, StudentNotFound

    client = RpcClient("amqp://guest:guest@localhost:5672/", timeout=5.0)
    student = client.students.get_student(1)                 # attribute sugar
    student = client.call("students", "get_student", 1)      # the same call
    client.status.get_status_history(1, timeout=10)          # per-call timeout
    client.status.request_status_change(1, "active", correlation_id="web-8f3a")  # your own id
    try:
        client.students.get_student(42)
    except StudentNotFound as exc:
        print(exc.code, exc.details, exc.correlation_id)

It speaks nameko's RPC wire protocol (``nameko/rpc.py``): a persistent JSON
message ``{"args": [...], "kwargs": {...}}`` to the ``nameko-rpc`` topic
exchange with routing key ``service.method``, published ``mandatory`` with
publisher confirms (a call nobody can receive raises :class:`UnknownService`
at once, as nameko does), ``reply_to`` an exclusive auto-delete reply queue
bound to ``nameko-rpc`` by its own name, and nameko's context headers
(``nameko.call_id_stack``, ``nameko.correlation_id``). The reply ``{"result": ...,
"error": ...}`` returns the result or raises the typed error (``clients.errors``).

**Correlation id.** Every call carries one (the header ``nameko.correlation_id``, not to
be confused with the AMQP property ``correlation_id`` that pairs a reply with its call):
the call's ``correlation_id=``, else the client's (``context_data={"correlation_id": ...}``),
else a new UUID (version 7: time-ordered). The service runs the call under it, and everything the call causes
(further calls, events, stored requests, the mail at the end) carries it. Pass your own
request's id to follow it through mensageria; an error raised by a call names the id it
was sent with (``exc.correlation_id``).

**Traces.** With an OpenTelemetry SDK installed in your program, each call is a CLIENT span
whose ``traceparent`` the call carries (``nameko.traceparent``): see :mod:`clients.tracing`.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import pika
from pika.exceptions import AMQPError, UnroutableError

from clients import codec, tracing
from clients.connection import DEFAULT_URL, Link, PerThread, broker_error
from clients.errors import ClientError, RpcTimeout, UnknownService, remote_error

RPC_EXCHANGE = "nameko-rpc"
HEADER_PREFIX = "nameko"  # nameko.constants.HEADER_PREFIX: context key k travels as header "nameko.k"
CALLER = "pika_client"  # first element of our call ids, as a service name is in nameko's
CORRELATION_ID = "correlation_id"  # context key: travels as the header "nameko.correlation_id"
_SANE_CORRELATION_ID = re.compile(r"[!-~]{1,128}")  # what the services accept (services.infra.correlation)


def new_correlation_id() -> str:
    """A new correlation id: a UUID version 7 (RFC 9562: 48 bits of Unix milliseconds, then 74
    random bits), as the services make theirs, so that the requests it starts are stored in
    order at the end of the services' ``correlation_id`` index rather than all over it."""
    random = int.from_bytes(os.urandom(10), "big")
    millis = time.time_ns() // 1_000_000 & ((1 << 48) - 1)
    value = millis << 80 | 0x7 << 76 | (random >> 62 & 0xFFF) << 64 | 0b10 << 62 | random & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def correlation_id_for(given: str | None, context_data: Mapping[str, Any]) -> str:
    """The correlation id of one call or publish: ``given``, else ``context_data``'s, else a new UUID.

    Raises ``ValueError`` for one the services would replace: it must be 1 to 128 visible
    ASCII characters (no spaces).
    """
    correlation_id = given or context_data.get(CORRELATION_ID) or new_correlation_id()
    if not (isinstance(correlation_id, str) and _SANE_CORRELATION_ID.fullmatch(correlation_id)):
        raise ValueError(f"correlation_id must be 1 to 128 visible ASCII characters, not {correlation_id!r}")
    return correlation_id


def context_headers(context_data: Mapping[str, Any], correlation_id: str | None = None) -> dict[str, Any]:
    """Nameko context headers for one call: ``context_data`` plus a fresh call id
    appended to ``call_id_stack`` and ``correlation_id`` (nameko's ``HeaderEncoder``;
    ``None`` values dropped)."""
    data = {**context_data, CORRELATION_ID: correlation_id or context_data.get(CORRELATION_ID)}
    data["call_id_stack"] = [*data.get("call_id_stack", ()), f"{CALLER}.{uuid.uuid4()}"]
    return {f"{HEADER_PREFIX}.{key}": value for key, value in data.items() if value is not None}


class RpcClient:
    """A thread-safe Nameko RPC client: one connection and reply queue per thread.

    ``url`` is an AMQP URL (``amqp://user:password@host:5672/vhost``), or the
    nodes of a cluster, ``;``-separated (each connection takes the first that answers);
    ``timeout`` bounds every call (seconds; override per call with
    ``timeout=``, which is therefore not passed on to the remote method);
    ``context_data`` is sent as nameko context headers (``user_id``,
    ``language``, ``auth_token``, ...). Each call's correlation id is its
    ``correlation_id=`` (not passed on to the remote method either: the
    services take the header's as their default), else ``context_data``'s,
    else a new UUID.

    Each thread that calls gets its own connection, opened on its first call
    and reopened transparently if the broker dropped it in between (a broker
    restart, or its node lost: the next node listed takes over). Close with
    :meth:`close` (or use ``with RpcClient(url) as client``) from each thread
    that used it.

    The timeout covers publishing and waiting for the reply; connecting is
    bounded by it too (unless the URL sets ``socket_timeout``/``stack_timeout``).
    The broker's publish confirm, which normally takes milliseconds, has no
    deadline of its own in pika: a silently dead peer is noticed by the AMQP
    heartbeat (``?heartbeat=`` in the URL).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        timeout: float = 5.0,
        context_data: Mapping[str, Any] | None = None,
        exchange: str = RPC_EXCHANGE,
    ):
        self.url = url
        self.timeout = timeout
        self.context_data = dict(context_data or {})
        self.exchange = exchange
        self._links = PerThread(url, "RpcClient", timeout, self._prepare)

    def call(
        self,
        service: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = None,
        correlation_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``service.method(*args, **kwargs)`` and return its result.

        Raises the remote error's class from :mod:`clients.errors`,
        :class:`UnknownService` if no queue receives ``service.method``,
        :class:`RpcTimeout` after ``timeout`` (default: the client's) seconds,
        :class:`BrokerUnavailable` if the connection is lost during the call;
        each with the call's ``correlation_id``. ``ValueError`` for a
        ``correlation_id`` the services would not accept.
        """
        correlation_id = correlation_id_for(correlation_id, self.context_data)
        try:
            return self._call(service, method, args, kwargs, timeout, correlation_id)
        except ClientError as exc:
            exc.correlation_id = correlation_id
            raise

    def _call(
        self, service: str, method: str, args: tuple, kwargs: dict, timeout: float | None, correlation_id: str
    ) -> Any:
        with tracing.span(f"{service}/{method}", tracing.CLIENT, tracing.rpc_attributes(service, method)) as span:
            return self._traced_call(service, method, args, kwargs, timeout, correlation_id, span)

    def _traced_call(
        self,
        service: str,
        method: str,
        args: tuple,
        kwargs: dict,
        timeout: float | None,
        correlation_id: str,
        span: Any,
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        body = codec.dumps({"args": args, "kwargs": kwargs})  # TypeError for what JSON cannot carry
        link = self._links.get()
        reply_key = str(uuid.uuid4())  # the AMQP correlation_id: pairs the reply with this call
        link.state["pending"], link.state["reply"] = reply_key, None
        properties = pika.BasicProperties(
            content_type=codec.CONTENT_TYPE,
            content_encoding=codec.CONTENT_ENCODING,
            delivery_mode=pika.DeliveryMode.Persistent,
            reply_to=link.state["reply_to"],
            correlation_id=reply_key,
            headers={**context_headers(self.context_data, correlation_id), **tracing.headers_of(span)},
        )
        try:
            link.channel.basic_publish(
                self.exchange,
                f"{service}.{method}",
                body,
                properties,
                mandatory=True,
            )
            reply = self._wait(link, deadline)
        except UnroutableError:
            raise UnknownService(f"Unknown service `{service}`", {"service": service}) from None
        except AMQPError as exc:
            self._links.discard()
            raise broker_error(exc, f"RPC {service}.{method}") from exc
        finally:
            link.state["pending"] = None
        if reply is None:
            raise RpcTimeout(
                f"{service}.{method} did not answer within {timeout}s",
                {"service": service, "method": method, "timeout": timeout},
            )
        reply = codec.loads(reply)
        if reply.get("error"):
            raise remote_error(reply["error"])
        return reply.get("result")

    def close(self) -> None:
        """Close this thread's connection (and those of threads that have ended)."""
        self._links.close()

    def __getattr__(self, service: str) -> ServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self, service)

    def __getitem__(self, service: str) -> ServiceProxy:
        """``client["service-name"]`` for service names that are not identifiers."""
        return ServiceProxy(self, service)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RpcClient timeout={self.timeout}>"

    def _prepare(self, link: Link) -> None:
        channel = link.channel
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        # no dots in the name: it is also the routing key and must not match a `service.*` binding
        reply_to = f"{CALLER}-reply-{uuid.uuid4()}"
        channel.queue_declare(reply_to, exclusive=True, auto_delete=True)
        channel.queue_bind(reply_to, self.exchange, routing_key=reply_to)
        link.state.update(reply_to=reply_to, pending=None, reply=None)

        def on_reply(_channel: Any, _method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            # a late reply to a call that timed out has another correlation id: dropped
            if properties.correlation_id == link.state["pending"]:
                link.state["reply"] = body

        channel.basic_consume(reply_to, on_reply, auto_ack=True)

    @staticmethod
    def _wait(link: Link, deadline: float) -> bytes | None:
        while link.state["reply"] is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            link.connection.process_data_events(time_limit=remaining)
        return link.state["reply"]


class ServiceProxy:
    """``client.students``: its attributes are the service's methods."""

    def __init__(self, client: RpcClient, service: str):
        self._client = client
        self._service = service

    def __getattr__(self, method: str) -> MethodProxy:
        if method.startswith("_"):
            raise AttributeError(method)
        return MethodProxy(self._client, self._service, method)

    def __repr__(self) -> str:
        return f"<ServiceProxy {self._service}>"


class MethodProxy:
    """``client.students.get_student``: calling it makes the RPC call."""

    def __init__(self, client: RpcClient, service: str, method: str):
        self._client = client
        self._service = service
        self._method = method

    def __call__(
        self, *args: Any, timeout: float | None = None, correlation_id: str | None = None, **kwargs: Any
    ) -> Any:
        return self._client.call(
            self._service, self._method, *args, timeout=timeout, correlation_id=correlation_id, **kwargs
        )

    def __repr__(self) -> str:
        return f"<MethodProxy {self._service}.{self._method}>"
