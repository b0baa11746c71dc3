"""Run Nameko services under a small supervisor.

    python -m tools.launch [--config config.yaml] services.students [more modules]

- ``nameko run`` fails at once when RabbitMQ is not up yet (its extensions
  declare queues while starting): this waits with exponential backoff, one log
  line per attempt.
- A nameko 2.x container dies when its broker connection breaks under it (an
  ack on a dead socket kills the container), so a broker restart would end the
  service: this restarts ``nameko run`` (after waiting for the broker again),
  with backoff. Nothing is lost meanwhile: messages are acked only after their
  work committed, and queues and messages are durable.
- SIGTERM / SIGINT are passed on to ``nameko run``, which finishes the work in
  hand and stops (killed after ``STOP_GRACE`` seconds if it hangs, e.g. on a
  broker that is gone); then this exits with its status. If this supervisor is
  killed, the kernel kills ``nameko run`` with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.infra.config import load_config
from tools.preflight import broker_reachable, redacted

log = logging.getLogger("mensageria.launch")

MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a run this long resets the restart backoff
STOP_GRACE = 30.0  # seconds nameko gets to stop gracefully before it is killed
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: if this supervisor dies (even by SIGKILL), the kernel kills
    ``nameko run`` too, so no service outlives its supervisor (Linux)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the supervisor's own stop still applies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for_broker(amqp_uri: str, max_wait: float | None = None) -> bool:
    delay, attempt, started = 0.5, 1, time.monotonic()
    while not broker_reachable(amqp_uri):
        if max_wait is not None and time.monotonic() - started + delay > max_wait:
            return False
        log.warning("broker %s not reachable (attempt %d); retrying in %.1fs", redacted(amqp_uri), attempt, delay)
        time.sleep(delay)
        delay, attempt = min(delay * 2, MAX_DELAY), attempt + 1
    return True


class Supervisor:
    def __init__(self, command: list[str], amqp_uri: str):
        self.command = command
        self.amqp_uri = amqp_uri
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def forward(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        delay = 1.0
        while not self.stopping:
            wait_for_broker(self.amqp_uri)
            if self.stopping:
                break
            started = time.monotonic()
            self.child = subprocess.Popen(self.command, preexec_fn=_die_with_parent)
            status = self._wait()
            if self.stopping:
                return status if status > 0 else 0
            if time.monotonic() - started > STABLE_AFTER:
                delay = 1.0
            log.warning("%s exited with status %s; restarting in %.1fs", " ".join(self.command[3:]), status, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
        return 0

    def _wait(self) -> int:
        """The child's exit status; once a stop was asked, at most STOP_GRACE seconds."""
        while True:
            try:
                return self.child.wait(timeout=STOP_GRACE if self.stopping else None)
            except subprocess.TimeoutExpired:
                if not self.stopping:
                    continue
                log.error("%s did not stop within %.0fs; killing it", " ".join(self.command[3:]), STOP_GRACE)
                self.child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="run Nameko services, waiting for and surviving the broker")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("services", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    nameko = str(Path(sys.executable).parent / "nameko")
    command = [nameko, "run", "--config", args.config, *args.services]
    sys.exit(Supervisor(command, load_config(args.config)["AMQP_URI"]).run())


if __name__ == "__main__":
    main()
