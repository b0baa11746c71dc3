"""Operating a service's dead-letter queue: list, inspect, replay, purge.

Parked events stay in RabbitMQ (``<service>.dead-letters``, durable). Listing
takes messages without acking them and lets the broker requeue them in place,
so it changes nothing. Replaying publishes an event (confirmed) back to the one
handler queue it failed in, with a fresh attempt count, and only then acks it.

Every service with reliable handlers exposes the same RPC methods
(:class:`DeadLetterRpc`) and the same ``nameko shell`` helpers::

    >>> n.rpc.status.list_dead_letters()
    >>> n.rpc.status.replay_dead_letters(["<message id>"])   # or None for all
"""

from __future__ import annotations

from typing import Any

from kombu import Connection
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from prometheus_client.core import Metric

from services.exceptions import ValidationFailed
from services.infra import correlation, metrics, parking
from services.infra.inbound import rpc

MAX_LIST = 1000
DEPTH_TIMEOUT = 2.0  # seconds a scrape waits for the broker


def describe(message: Any) -> dict:
    headers = message.headers or {}
    return {
        "message_id": message.properties.get("message_id"),
        "handler": headers.get(parking.HANDLER),
        "queue": headers.get(parking.QUEUE),
        "exchange": headers.get(parking.ORIGINAL_EXCHANGE),
        "routing_key": headers.get(parking.ORIGINAL_ROUTING_KEY),
        "attempts": int(headers.get(parking.ATTEMPT, 1)),
        "error": headers.get(parking.ERROR),
        "failed_at": headers.get(parking.FAILED_AT),
        "traceback": headers.get(parking.TRACEBACK),
        "correlation_id": headers.get(correlation.HEADER),  # of the request that caused the event
        # a message refused before decoding: the payload holds its raw body (base64)
        "malformed": bool(headers.get(parking.MALFORMED)),
        "payload": message.payload,
    }


class DeadLetterQueue:
    def __init__(self, amqp_uri: str, service_name: str):
        self.amqp_uri = amqp_uri
        self.queue = parking.dead_letter_queue(service_name)
        self.publisher = Publisher(amqp_uri)

    def _take(self, channel: Any, limit: int) -> list[Any]:
        """Up to ``limit`` messages, unacked: closing the channel puts them back."""
        queue = self.queue(channel)
        queue.declare()
        taken = []
        while len(taken) < limit:
            message = queue.get(no_ack=False)
            if message is None:
                break
            taken.append(message)
        return taken

    def list(self, limit: int = 100) -> list[dict]:
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            messages = [describe(m) for m in self._take(channel, limit)]
            channel.close()  # requeues them, in order
        return messages

    def replay(self, message_ids: list[str] | None = None) -> tuple[list[str], list[str]]:
        """Send parked events back to their handler; ``None`` replays all. Returns the
        ids replayed and those left parked because they cannot be replayed (malformed:
        the same bytes would be refused again; purge them once read)."""
        replayed, kept = [], []
        wanted = None if message_ids is None else set(message_ids)
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            for message in self._take(channel, MAX_LIST):
                entry = describe(message)
                if wanted is not None and entry["message_id"] not in wanted:
                    continue
                if entry["malformed"]:
                    kept.append(entry["message_id"])
                    continue
                headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(parking.HEADER)}
                headers[parking.ORIGINAL_EXCHANGE] = entry["exchange"]
                headers[parking.ORIGINAL_ROUTING_KEY] = entry["routing_key"]
                self.publisher.publish(
                    message.payload,
                    exchange=parking.DEFAULT_EXCHANGE,
                    routing_key=entry["queue"],
                    headers=headers,
                    message_id=entry["message_id"],
                    mandatory=True,
                )
                message.ack()
                replayed.append(entry["message_id"])
            channel.close()
        return replayed, kept

    def purge(self) -> int:
        with Connection(self.amqp_uri) as connection:
            queue = self.queue(connection.channel())
            queue.declare()
            return queue.purge() or 0

    def depth(self) -> int:
        """How many events are parked now (a passive declare: nothing is taken or changed)."""
        with Connection(self.amqp_uri, connect_timeout=DEPTH_TIMEOUT) as connection:
            return self.queue(connection.channel()).queue_declare(passive=True).message_count


class DeadLetters(DependencyProvider):
    def setup(self) -> None:
        self.dlq = DeadLetterQueue(self.container.config[AMQP_URI_CONFIG_KEY], self.container.service_name)

    def get_dependency(self, worker_ctx: Any) -> DeadLetterQueue:
        return self.dlq

    def collect_metrics(self) -> list[Metric]:
        return [metrics.DEAD_LETTERS.family({(self.container.service_name,): self.dlq.depth()})]


class DeadLetterRpc:
    """RPC methods for a service's dead letters (mixed into the service class)."""

    dead_letters = DeadLetters()

    @rpc
    def list_dead_letters(self, limit: int = 100) -> list[dict]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise ValidationFailed("Invalid limit.", {"limit": [f"Must be an integer from 1 to {MAX_LIST}."]})
        return self.dead_letters.list(limit)

    @rpc
    def replay_dead_letters(self, message_ids: list[str] | None = None) -> dict:
        if message_ids is not None and (
            not isinstance(message_ids, list) or not all(isinstance(i, str) for i in message_ids)
        ):
            raise ValidationFailed("Invalid message ids.", {"message_ids": ["Must be a list of strings or null."]})
        replayed, malformed = self.dead_letters.replay(message_ids)
        return {"replayed": replayed, "not_replayable": malformed}

    @rpc
    def count_dead_letters(self) -> int:
        """How many messages wait in this service's dead-letter queue (the broker's count)."""
        return self.dead_letters.depth()

    @rpc
    def purge_dead_letters(self) -> dict:
        return {"purged": self.dead_letters.purge()}
