"""A caller in another language, as far as the services can tell: plain pika, no nameko,
no eventlet, run as its own process (``python -m tests.integration.raw_amqp``).

Reads a JSON list of messages on stdin, each ``{"exchange", "routing_key", "body"
(base64), "content_type", "reply": bool}``, publishes them in order (persistent, with
publisher confirms) and, for those with ``reply``, waits for the reply on an exclusive
queue. Prints a JSON list: per message ``{"correlation_id", "reply", "seconds"}``
(``reply`` is the decoded JSON reply, or None when none came within ``--wait`` seconds).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import uuid

import pika


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("amqp_uri")
    parser.add_argument("--wait", type=float, default=5.0)
    args = parser.parse_args()
    messages = json.load(sys.stdin)
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_uri))
    channel = connection.channel()
    channel.confirm_delivery()
    reply_queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(reply_queue, "nameko-rpc", routing_key=reply_queue)
    results = []
    for spec in messages:
        correlation_id = str(uuid.uuid4())
        properties = pika.BasicProperties(
            content_type=spec["content_type"],
            delivery_mode=2,
            correlation_id=correlation_id,
            reply_to=reply_queue if spec.get("reply") else None,
            message_id=str(uuid.uuid4()),
        )
        sent = time.monotonic()
        channel.basic_publish(spec["exchange"], spec["routing_key"], base64.b64decode(spec["body"]), properties)
        result = {"correlation_id": correlation_id, "reply": None, "seconds": None}
        if spec.get("reply"):
            deadline = sent + args.wait
            while time.monotonic() < deadline and result["reply"] is None:
                method, reply_properties, body = channel.basic_get(reply_queue, auto_ack=True)
                if method is None:
                    connection.sleep(0.01)
                    continue
                if reply_properties.correlation_id == correlation_id:
                    result.update(reply=json.loads(body), seconds=time.monotonic() - sent)
        results.append(result)
    connection.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
