"""What every durable queue mensageria declares is declared with, by kind, for ``QUEUE_TYPE``.

RabbitMQ refuses a declaration whose arguments differ from the queue's (``PRECONDITION_FAILED``),
and several processes declare the same queue (a subscriber and its publishers, a service and its
tools), so these functions are the only place queue arguments come from:

- :func:`consumed_arguments`: the queues workers consume (``rpc-<service>``, the event handlers'
  ``evt-…`` queues). Quorum: a message delivered ``QUEUE_DELIVERY_LIMIT`` times more without an ack
  (its consumer's process died with it in hand, or requeued it) is dead-lettered by the broker to
  ``<service>.dead-letters`` instead of crashing consumers forever — and never dropped: the
  dead-lettering is at-least-once (the broker keeps the message until the dead-letter queue has
  confirmed it), which needs ``x-overflow: reject-publish``.
- :func:`delay_arguments`: the retry delay queues (``<queue>.retry.<ms>ms``), which nobody consumes:
  a message waits its TTL out and is dead-lettered back to its handler's queue (at-least-once too).
- :func:`dead_letter_arguments`: ``<service>.dead-letters``, without a delivery limit: listing it
  takes messages and puts them back, which counts as a delivery (on RabbitMQ 3.x an absent limit
  is no limit; ``-1`` there would mean "dead-letter at the first return").

``classic`` declares exactly what mensageria declared before quorum queues (no delivery limit:
classic queues do not count deliveries). Reply queues are not here: they stay classic, exclusive
to one caller and auto-expiring, which quorum queues cannot be.
"""

from __future__ import annotations

from typing import Any

from services.infra.settings import Settings

QUORUM, CLASSIC = "quorum", "classic"
DEFAULT_EXCHANGE = ""  # dead letters travel through the default exchange, by queue name

# at-least-once dead-lettering (RabbitMQ 3.10+, quorum only) requires reject-publish overflow;
# with no length limit set, nothing is ever rejected for it
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def consumed_arguments(settings: Settings, dead_letters: str) -> dict[str, Any]:
    """An RPC or event handler queue, whose poison messages go to the queue ``dead_letters``."""
    if settings.queue_type == CLASSIC:
        return {}
    return {
        "x-queue-type": QUORUM,
        "x-delivery-limit": settings.queue_delivery_limit,
        "x-dead-letter-exchange": DEFAULT_EXCHANGE,
        "x-dead-letter-routing-key": dead_letters,
        **_AT_LEAST_ONCE,
    }


def delay_arguments(settings: Settings, milliseconds: int, target: str) -> dict[str, Any]:
    """A retry delay queue: each message waits ``milliseconds``, then goes back to ``target``."""
    arguments = {
        "x-message-ttl": milliseconds,
        "x-dead-letter-exchange": DEFAULT_EXCHANGE,
        "x-dead-letter-routing-key": target,
    }
    if settings.queue_type == CLASSIC:
        return arguments
    return {"x-queue-type": QUORUM, **arguments, **_AT_LEAST_ONCE}


def dead_letter_arguments(settings: Settings) -> dict[str, Any]:
    """A service's dead-letter queue: no delivery limit, no dead-lettering of its own."""
    return {} if settings.queue_type == CLASSIC else {"x-queue-type": QUORUM}
