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

import time
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Consumer
from marshmallow import fields, validate
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from prometheus_client.core import Metric

from services.exceptions import ValidationFailed
from services.infra import correlation, metrics, parking
from services.infra.inbound import rpc
from services.infra.settings import Settings
from services.schemas import StrictSchema, load

MAX_LIST = 1000
MAX_SCAN = 10_000  # messages a filter looks through at most (they are taken and put back)
PREFETCH = 10_000  # unacked messages held at once while looking through them
TAKE_TIMEOUT = 10.0
DEPTH_TIMEOUT = 2.0  # seconds a scrape waits for the broker


# what RabbitMQ adds to a message it dead-letters or redelivers: not the message's own, not replayed
BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
)


def describe(message: Any) -> dict:
    headers = message.headers or {}
    entry = {
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
        "replayable": not headers.get(parking.MALFORMED),
        "payload": message.payload,
    }
    if entry["handler"] is None and headers.get("x-death"):
        entry.update(_dead_lettered_by_the_broker(headers))
    return entry


def _dead_lettered_by_the_broker(headers: dict) -> dict:
    """A message the broker moved here (its quorum queue's delivery limit): where from, from ``x-death``."""
    death = headers["x-death"][0]  # the latest
    queue = str(death.get("queue") or "")
    service, _, handler = queue.partition("--")[2].partition(".")
    is_rpc = queue.startswith("rpc-")
    moment = death.get("time")
    return {
        "handler": f"{queue[len('rpc-') :]}.rpc" if is_rpc else f"{service}.{handler}",
        "queue": queue,
        "exchange": headers.get(parking.ORIGINAL_EXCHANGE, death.get("exchange")),
        "routing_key": headers.get(parking.ORIGINAL_ROUTING_KEY, (death.get("routing-keys") or [None])[0]),
        "error": f"Dead-lettered by RabbitMQ ({death.get('reason')}): its consumers took it and never acked it "
        f"(crashed or requeued) more times than the queue's delivery limit allows.",
        "failed_at": moment.isoformat() if isinstance(moment, datetime) else None,
        # an RPC request's caller has long given up (and may have retried): sent again, it would
        # run without anyone to answer
        "replayable": not is_rpc,
    }


class DeadLetterQueue:
    def __init__(self, amqp_uri: str, service_name: str, settings: Settings):
        self.amqp_uri = amqp_uri
        self.queue = parking.dead_letter_queue(service_name, settings)
        self.publisher = Publisher(amqp_uri)

    def _take(self, connection: Connection, channel: Any, limit: int) -> list[Any]:
        """Up to ``limit`` (≤ ``PREFETCH``) messages, oldest first, unacked: closing the channel puts
        them back. Consumed with a prefetch window rather than one ``basic.get`` round trip each:
        looking through 10,000 parked messages takes a fraction of a second, not seconds."""
        queue = self.queue(channel)
        queue.declare()
        wanted = min(limit, PREFETCH, queue.queue_declare(passive=True).message_count)
        if wanted <= 0:
            return []
        taken: list[Any] = []
        channel.basic_qos(0, wanted, False)
        consumer = Consumer(channel, [queue], on_message=taken.append, no_ack=False, accept=["json"])
        consumer.consume()
        deadline = time.monotonic() + TAKE_TIMEOUT
        while len(taken) < wanted and time.monotonic() < deadline:
            try:
                connection.drain_events(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            except TimeoutError:  # fewer than counted: another consumer took some meanwhile
                break
        consumer.cancel()
        return taken

    def list(self, limit: int = 100) -> list[dict]:
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            messages = [describe(m) for m in self._take(connection, channel, limit)]
            channel.close()  # requeues them, in order
        return messages

    def replay(self, message_ids: list[str] | None = None) -> tuple[list[str], list[str]]:
        """Send parked events back to their handler; ``None`` replays all. Returns the
        ids replayed and those left parked because they cannot be replayed (malformed:
        the same bytes would be refused again; RPC requests the broker parked: their
        callers have given up; purge them once read)."""
        wanted = None if message_ids is None else set(message_ids)
        return self._replay(lambda entry: wanted is None or entry["message_id"] in wanted, MAX_LIST, MAX_LIST)

    def matching(self, accept: Any, scan: int = MAX_SCAN) -> tuple[list[dict], int]:
        """The parked events ``accept(entry)`` takes among the first ``scan``, and how many were looked at."""
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            taken = self._take(connection, channel, scan)
            found = [entry for entry in map(describe, taken) if accept(entry)]
            channel.close()  # requeues them all, in order
        return found, len(taken)

    def replay_matching(self, accept: Any, cap: int, scan: int = MAX_SCAN) -> tuple[list[str], list[str]]:
        """Replay at most ``cap`` of the events ``accept(entry)`` takes among the first ``scan``."""
        return self._replay(accept, cap, scan)

    def _replay(self, accept: Any, cap: int, scan: int) -> tuple[list[str], list[str]]:
        replayed, kept = [], []
        with Connection(self.amqp_uri) as connection:
            channel = connection.channel()
            for message in self._take(connection, channel, scan):
                entry = describe(message)
                if len(replayed) >= cap or not accept(entry):
                    continue
                if not entry["replayable"]:
                    kept.append(entry["message_id"])
                    continue
                headers = {
                    k: v
                    for k, v in (message.headers or {}).items()
                    if not k.startswith(parking.HEADER) and k not in BROKER_HEADERS
                }
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
        config = self.container.config
        self.dlq = DeadLetterQueue(
            config[AMQP_URI_CONFIG_KEY], self.container.service_name, Settings.from_config(config)
        )

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
        answer = {"replayed": replayed, "not_replayable": malformed}
        if message_ids is not None:  # replayed or purged meanwhile, or never parked here
            answer["not_found"] = sorted(set(message_ids) - set(replayed) - set(malformed))
        return answer

    @rpc
    def find_dead_letters(self, handler=None, error=None, since=None, until=None, limit=100) -> dict:
        """Parked events matching every filter given (``error``: a piece of the error, any case),
        among the first ``MAX_SCAN``: ``{items (the first limit), matched, scanned}``."""
        query = load(DeadLetterFilterSchema(), {"handler": handler, "error": error, "since": since, "until": until})
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise ValidationFailed("Invalid limit.", {"limit": [f"Must be an integer from 1 to {MAX_LIST}."]})
        if not any(query.values()):  # no filter: the first ``limit``, and the queue's count
            items = self.dead_letters.list(limit)
            parked = self.dead_letters.depth()
            return {"items": items, "matched": parked, "scanned": parked}
        found, scanned = self.dead_letters.matching(_filter(query))
        return {"items": found[:limit], "matched": len(found), "scanned": scanned}

    @rpc
    def replay_matching_dead_letters(self, handler=None, error=None, since=None, until=None, cap=100) -> dict:
        """Replay at most ``cap`` of the parked events :meth:`find_dead_letters` would find."""
        query = load(DeadLetterFilterSchema(), {"handler": handler, "error": error, "since": since, "until": until})
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_LIST:
            raise ValidationFailed("Invalid cap.", {"cap": [f"Must be an integer from 1 to {MAX_LIST}."]})
        replayed, malformed = self.dead_letters.replay_matching(_filter(query), cap)
        return {"replayed": replayed, "not_replayable": malformed}

    @rpc
    def count_dead_letters(self) -> int:
        """How many messages wait in this service's dead-letter queue (the broker's count)."""
        return self.dead_letters.depth()

    @rpc
    def purge_dead_letters(self) -> dict:
        return {"purged": self.dead_letters.purge()}


class DeadLetterFilterSchema(StrictSchema):
    handler = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    error = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    since = fields.AwareDateTime(load_default=None, allow_none=True)
    until = fields.AwareDateTime(load_default=None, allow_none=True)


def _filter(query: dict) -> Any:
    """``accept(entry)`` for a filter: the handler equal, the error containing the text (any case),
    failed within the time range."""
    error = query["error"].lower() if query["error"] else None

    def accept(entry: dict) -> bool:
        if query["handler"] and entry["handler"] != query["handler"]:
            return False
        if error and error not in (entry["error"] or "").lower():
            return False
        if query["since"] or query["until"]:
            failed_at = _moment(entry["failed_at"])
            if failed_at is None:
                return False
            if (query["since"] and failed_at < query["since"]) or (query["until"] and failed_at >= query["until"]):
                return False
        return True

    return accept


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
