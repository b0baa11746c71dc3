"""The gateway's dependency providers: RPC with a timeout, durable dispatch,
settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import eventlet
from amqp.exceptions import ChannelError
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.amqp.publish import UndeliverableMessage
from nameko.events import EventDispatcher
from nameko.exceptions import RemoteError, UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy

from gateway.exceptions import BackendTimeout, ServiceUnavailable
from services.topology import subscriber_queues

BROKER_ERRORS = (OSError, OperationalError, AmqpConnectionError)


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
        deadline = eventlet.Timeout(timeout)
        try:
            return getattr(self._proxy, method)(*args, **kwargs)
        except eventlet.Timeout as exc:
            if exc is not deadline:
                raise
            raise BackendTimeout(
                f"The {self._service} service did not answer within {timeout:g}s.",
                {"service": self._service, "timeout": timeout},
            ) from None
        except UnknownService:
            raise ServiceUnavailable(
                f"The {self._service} service is not running.", {"service": self._service}
            ) from None
        except BROKER_ERRORS as exc:
            raise ServiceUnavailable("The message broker is unreachable.", {"reason": str(exc)}) from None
        except RemoteError as exc:  # the service failed unexpectedly (it logged why)
            raise ServiceUnavailable(
                f"The {self._service} service failed; try again.", {"service": self._service, "reason": exc.exc_type}
            ) from None
        except ChannelError as exc:  # e.g. no RPC exchange yet: no service has ever started
            raise ServiceUnavailable(f"The {self._service} service is not available.", {"reason": str(exc)}) from None
        finally:
            deadline.cancel()


class TimedRpcProxy(RpcProxy):
    """nameko's ``RpcProxy`` with the configured ``RPC_TIMEOUT`` on every call
    (nameko 2.x service proxies have no timeout of their own)."""

    def get_dependency(self, worker_ctx: Any) -> TimedServiceProxy:
        timeout = float(self.container.config.get("RPC_TIMEOUT", 5))
        return TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)


class DurableEventDispatcher(EventDispatcher):
    """Dispatches with publisher confirms into queues declared beforehand.

    Subscriber queues (see :mod:`services.topology`) are declared at start-up,
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
        dispatch = super().get_dependency(worker_ctx)

        def durable_dispatch(event_type: str, payload: dict) -> None:
            try:
                dispatch(event_type, payload)
            except UndeliverableMessage:  # its queue was deleted behind our back
                raise ServiceUnavailable("No queue accepts this request.", {"event_type": event_type}) from None
            except BROKER_ERRORS as exc:
                raise ServiceUnavailable("The message broker is unreachable.", {"reason": str(exc)}) from None

        return durable_dispatch


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int
    request_id_secret: str
    ready_timeout: float


class Settings(DependencyProvider):
    def setup(self) -> None:
        config = self.container.config
        self.settings = GatewaySettings(
            max_body_bytes=int(config.get("MAX_BODY_BYTES", 65536)),
            request_id_secret=str(config.get("REQUEST_ID_SECRET", "mensageria-dev-secret")),
            ready_timeout=float(config.get("READY_TIMEOUT", 2)),
        )

    def get_dependency(self, worker_ctx: Any) -> GatewaySettings:
        return self.settings
