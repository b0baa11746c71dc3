"""``python -m tools.local_cluster``: RabbitMQ nodes of one's own, up until Ctrl-C, then gone."""

import os
import re
import signal
import subprocess
import sys

import pika
import pytest

from tools.local_cluster import port_open

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_node_of_ones_own_serves_amqp_until_stopped_then_leaves_nothing_listening():
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.local_cluster", "--nodes", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        amqp_line = process.stdout.readline()
        api_line = process.stdout.readline()
        assert amqp_line.startswith("AMQP_URI="), (amqp_line, process.stderr.read() if process.poll() else "")
        amqp_uri = amqp_line.strip().split("=", 1)[1].strip("'")
        assert api_line.startswith("RABBIT_API_URI='http://guest:guest@127.0.0.1:")
        port = int(re.search(r"@127\.0\.0\.1:(\d+)/", amqp_uri).group(1))

        with pika.BlockingConnection(pika.URLParameters(amqp_uri)) as connection:
            channel = connection.channel()
            channel.queue_declare("hello", durable=True, arguments={"x-queue-type": "quorum"})
            channel.confirm_delivery()
            channel.basic_publish("", "hello", b"kept")
            _method, _properties, body = channel.basic_get("hello", auto_ack=True)
        assert body == b"kept"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
        assert not port_open(port)
    finally:
        if process.poll() is None:  # a failed check: still stop the node (a SIGKILL would leave it running)
            process.terminate()
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.parametrize("nodes", ["0", "three"])
def test_a_node_count_that_is_not_a_positive_number_is_refused(nodes):
    result = subprocess.run(
        [sys.executable, "-m", "tools.local_cluster", "--nodes", nodes], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "--nodes" in result.stderr
