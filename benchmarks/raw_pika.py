"""Scenario (a): the broker's ceiling with plain pika.

N small persistent messages into a durable queue, with publisher confirms,
consumed with a manual ack per message by a consumer in another process;
messages/s from the first publish to the last ack.

The publisher is a pika ``SelectConnection`` that keeps a window of
unconfirmed messages in flight (publish, and top the window up as
``Basic.Ack``s — often ``multiple`` — arrive). That is the fastest honest way
pika offers: ``BlockingConnection.confirm_delivery()`` waits for each confirm
before the next publish, which on this machine caps one publisher near the
1,000 messages/s of a sequential confirmed publisher (like nameko's).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import pika

from benchmarks.core import Context, Row
from benchmarks.cpu import CpuMeter, format_cpu, rabbitmq_pids

QUEUE = "bench.raw"
BODY = b'{"student_id": 12345, "status": "active", "reason": "benchmark"}'
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")


def _consume(amqp_uri: str, count: int, prefetch: int, pipe: Connection) -> None:
    """Child process: consume ``count`` messages, ack each; send back the last ack's time."""
    state = {"received": 0, "first": None, "last": None}

    def on_message(channel, method, _properties, _body) -> None:
        channel.basic_ack(delivery_tag=method.delivery_tag)
        state["received"] += 1
        if state["first"] is None:
            state["first"] = time.monotonic()
        if state["received"] >= count:
            state["last"] = time.monotonic()
            connection.close()

    def on_channel(channel) -> None:
        channel.basic_qos(prefetch_count=prefetch)
        channel.basic_consume(QUEUE, on_message, auto_ack=False)
        pipe.send("ready")

    connection = pika.SelectConnection(
        pika.URLParameters(amqp_uri),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda _conn, exc: pipe.send(("error", repr(exc))),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    pipe.send((state["received"], state["first"], state["last"]))


def start_consumer(
    ctx: Context, amqp_uri: str, count: int, prefetch: int
) -> tuple[multiprocessing.Process, Connection]:
    """A consumer of ``count`` messages of :data:`QUEUE` in a process of its own, ready; and the
    pipe that brings back ``(received, first, last)`` once it has them (stopped by cleanup)."""
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    consumer = spawn.Process(target=_consume, args=(amqp_uri, count, prefetch, child), daemon=True)
    consumer.start()
    ctx.cleanup.push("stop the pika consumer", lambda: consumer.kill() if consumer.is_alive() else None)
    if not parent.poll(30) or parent.recv() != "ready":
        raise RuntimeError("the pika consumer did not start")
    return consumer, parent


class PipelinedPublisher:
    """Publishes ``bodies`` as persistent messages with at most ``window`` unconfirmed."""

    def __init__(
        self, amqp_uri: str, bodies: Sequence[bytes], window: int, exchange: str = "", routing_key: str = QUEUE
    ):
        self.bodies, self.count, self.window = bodies, len(bodies), window
        self.exchange, self.routing_key = exchange, routing_key
        self.published = self.confirmed = self.nacked = 0
        self.started = self.finished = 0.0
        self.channel = None
        self.connection = pika.SelectConnection(
            pika.URLParameters(amqp_uri),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._on_open_error,
            on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
        )
        self.error: str | None = None

    def _on_open_error(self, _connection, exc) -> None:
        self.error = repr(exc)
        self.connection.ioloop.stop()

    def _on_channel(self, channel) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame) -> None:
        self.started = time.monotonic()
        self._top_up()

    def _top_up(self) -> None:
        while self.published < self.count and self.published - self.confirmed - self.nacked < self.window:
            self.channel.basic_publish(self.exchange, self.routing_key, self.bodies[self.published], PERSISTENT)
            self.published += 1

    def _on_confirm(self, frame) -> None:
        method = frame.method
        # delivery tags count publishes from 1; ``multiple`` confirms everything up to the tag
        done = method.delivery_tag - (self.confirmed + self.nacked) if method.multiple else 1
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += done
        else:
            self.confirmed += done
        if self.confirmed + self.nacked >= self.count:
            self.finished = time.monotonic()
            self.connection.close()
        else:
            self._top_up()

    def run(self) -> None:
        self.connection.ioloop.start()
        if self.error:
            raise RuntimeError(f"publisher could not connect: {self.error}")


def run(ctx: Context, backend: str) -> list[Row]:
    amqp_uri = ctx.broker.create_vhost(ctx.cleanup, "raw")
    count = ctx.sizes.raw_messages
    with pika.BlockingConnection(pika.URLParameters(amqp_uri)) as connection:
        connection.channel().queue_declare(QUEUE, durable=True)

    consumer, parent = start_consumer(ctx, amqp_uri, count, ctx.sizes.raw_window)

    meter = CpuMeter({"rabbitmq": rabbitmq_pids, "client": lambda: _self_and(consumer.pid)})
    meter.start()
    publisher = PipelinedPublisher(amqp_uri, [BODY] * count, ctx.sizes.raw_window)
    publisher.run()
    if not parent.poll(120):
        raise RuntimeError("the pika consumer did not receive every message within 120 s")
    received, _first, last = parent.recv()
    cpu = meter.stop()
    consumer.join(10)
    if received != count or publisher.nacked:
        raise RuntimeError(f"raw pika: {received}/{count} received, {publisher.nacked} nacked")

    elapsed = last - publisher.started
    publish_rate = count / (publisher.finished - publisher.started)
    notes = (
        f"SelectConnection, confirm window {ctx.sizes.raw_window}; "
        f"publish+confirm alone {publish_rate:,.0f}/s; {format_cpu(cpu, count / elapsed)}; "
        "client = publisher + consumer"
    )
    return [Row("a", "raw pika publish→consume", "-", 1, count / elapsed, count, notes=notes)]


def _self_and(pid: int | None) -> list[int]:
    return [os.getpid(), *([pid] if pid else [])]
