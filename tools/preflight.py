"""Start-up checks for ``make run``: is the broker there (any node of ``AMQP_URI``), is the gateway up.

python -m tools.preflight broker [--config config.yaml]
python -m tools.preflight gateway [--config config.yaml] [--timeout 60]
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

from services.infra import brokers
from services.infra.config import load_config
from services.infra.settings import Settings


def broker_reachable(amqp_uri: str, timeout: float = 3.0) -> bool:
    """Whether any node ``amqp_uri`` lists accepts a connection (one or several, ``;``-separated)."""
    return brokers.first_reachable(amqp_uri, timeout) is not None


def redacted(uri: str) -> str:
    """``uri`` (or each of several, ``;``-separated) with its password masked."""
    return brokers.redacted(uri)


def broker_unreachable(amqp_uri: str) -> str:
    """The one line that says no node answered, naming them."""
    listed = brokers.redacted(amqp_uri).split(brokers.SEPARATOR)
    where = f"at {listed[0]}" if len(listed) == 1 else f"at any of its nodes ({', '.join(listed)})"
    return (
        f"RabbitMQ is not reachable {where}: start one (`rabbitmq-server -detached`, "
        "or `docker compose up -d rabbitmq`) or point AMQP_URI at yours."
    )


def gateway_url(config: dict) -> str:
    host, _, port = Settings.from_config(config).web_server_address.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{host}:{port}"


def wait_for_gateway(url: str, timeout: float) -> bool:
    """Until ``/ready``: the gateway answers and students and status answer it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=3) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=["broker", "gateway"])
    parser.add_argument("--config", default=None)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    config = load_config(args.config)
    if args.check == "broker":
        uri = config["AMQP_URI"]
        try:
            brokers.nodes(uri)
        except ValueError as error:
            print(f"mensageria: {error}", file=sys.stderr)
            return 1
        if broker_reachable(uri):
            return 0
        print(broker_unreachable(uri), file=sys.stderr)
        return 1
    url = gateway_url(config)
    if wait_for_gateway(url, args.timeout):
        print(f"mensageria is up: gateway at {url} (API description: {url}/openapi.json)")
        return 0
    print(f"the system was not ready at {url}/ready within {args.timeout:g}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while waiting: the run command is stopping
        sys.exit(130)
