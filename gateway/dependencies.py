"""The gateway's dependency providers: RPC with a timeout, durable dispatch,
settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nameko.amqp.publish import UndeliverableMessage
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider

from services.exceptions import ServiceUnavailable
from services.rpc import BROKER_ERRORS, TimedRpcProxy, TimedServiceProxy
from services.topology import subscriber_queues

__all__ = ["DurableEventDispatcher", "GatewaySettings", "Settings", "TimedRpcProxy", "TimedServiceProxy"]


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
    bulk_max_rows: int = 100_000
    bulk_max_bytes: int = 32 * 1024 * 1024
    job_errors_shown: int = 100


class Settings(DependencyProvider):
    def setup(self) -> None:
        config = self.container.config
        self.settings = GatewaySettings(
            max_body_bytes=int(config.get("MAX_BODY_BYTES", 65536)),
            request_id_secret=str(config.get("REQUEST_ID_SECRET", "mensageria-dev-secret")),
            ready_timeout=float(config.get("READY_TIMEOUT", 2)),
            bulk_max_rows=int(config.get("BULK_MAX_ROWS", 100_000)),
            bulk_max_bytes=int(config.get("BULK_MAX_BYTES", 32 * 1024 * 1024)),
            job_errors_shown=int(config.get("JOB_ERRORS_SHOWN", 100)),
        )

    def get_dependency(self, worker_ctx: Any) -> GatewaySettings:
        return self.settings
