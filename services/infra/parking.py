"""A service's dead-letter queue, ``<service>.dead-letters``, and the headers that say
why and from where a message was parked (written by the retrying event handlers and the
inbound guard, read by :mod:`services.infra.dead_letters`)."""

from __future__ import annotations

from kombu import Exchange, Queue

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


def dead_letter_queue(service_name: str) -> Queue:
    name = f"{service_name}.dead-letters"
    return Queue(name, exchange=DEFAULT_EXCHANGE, routing_key=name, durable=True)
