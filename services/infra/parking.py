"""A service's dead-letter queue, ``<service>.dead-letters``, and the headers that say
why and from where a message was parked (written by the retrying event handlers and the
inbound guard, read by :mod:`services.infra.dead_letters`). The broker parks there too: a
message that exceeded its quorum queue's delivery limit arrives with RabbitMQ's own
``x-death`` header instead (see :mod:`services.infra.queues`)."""

from __future__ import annotations

from kombu import Exchange, Queue

from services.infra.queues import dead_letter_arguments
from services.infra.settings import Settings

HEADER = "x-mensageria-"
ATTEMPT = HEADER + "attempt"
ERROR = HEADER + "error"
ORIGINAL_EXCHANGE = HEADER + "original-exchange"
ORIGINAL_ROUTING_KEY = HEADER + "original-routing-key"
QUEUE = HEADER + "queue"
HANDLER = HEADER + "handler"
FAILED_AT = HEADER + "failed-at"
TRACEBACK = HEADER + "traceback"
MALFORMED = HEADER + "malformed"  # refused before decoding: the body describes the raw bytes

DEFAULT_EXCHANGE = Exchange("")


def dead_letter_name(service_name: str) -> str:
    return f"{service_name}.dead-letters"


def dead_letter_queue(service_name: str, settings: Settings) -> Queue:
    name = dead_letter_name(service_name)
    return Queue(
        name,
        exchange=DEFAULT_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments=dead_letter_arguments(settings),
    )
