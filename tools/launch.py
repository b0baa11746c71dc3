"""Run Nameko services under a small supervisor.

    python -m tools.launch [--config config.yaml] services.students [more modules]

- ``nameko run`` fails at once when RabbitMQ is not up yet (its extensions
  declare queues while starting): this waits with exponential backoff, one log
  line per attempt, until any node ``AMQP_URI`` lists answers.
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
import logging.config
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.infra import brokers, logs
from services.infra.config import load_config
from services.infra.settings import ConfigError, Settings
from tools.preflight import broker_reachable, redacted

log = logging.getLogger("mensageria.launch")

MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a run this long resets the restart backoff
STOP_GRACE = 30.0  # seconds nameko gets to stop gracefully before it is killed
PR_SET_PDEATHSIG = 1
POLL = 0.5  # seconds between looks at whether a stop was asked
# nameko run stopped while it is still starting its services can hang (its queue consumer
# is told twice that the last provider left); a stop asked that early gets a short grace
STARTING = 10.0
STARTING_GRACE = 5.0


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
        self.started = 0.0
        self.stopping = False

    def forward(self, signum: int, _frame: object) -> None:
        """Ask ``nameko run`` to stop, once: with SIGTERM whatever arrived here.

        SIGTERM is the one stop nameko run handles at any moment (before its handler
        is installed it simply ends; a SIGINT during start-up is swallowed by
        eventlet's monkey-patching). Later signals (a Ctrl-C after a SIGTERM, the same
        signal from the group and from ``bin/run``) are not repeated: a second stop
        while nameko run stops leaves it hung."""
        if self.stopping:
            return
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        delay = 1.0
        while not self.stopping:
            wait_for_broker(self.amqp_uri)
            if self.stopping:
                break
            started = self.started = time.monotonic()
            # a session of its own: a signal to our process group (Ctrl-C) reaches
            # nameko run once, through forward(), never also directly
            self.child = subprocess.Popen(self.command, preexec_fn=_die_with_parent, start_new_session=True)
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
        """The child's exit status; once a stop was asked, at most STOP_GRACE seconds
        (STARTING_GRACE in its first STARTING seconds).

        Waits in short slices: a signal handler only sets ``stopping``, and a wait
        without a timeout would resume after it as if nothing had happened."""
        deadline = grace = None
        while True:
            if self.stopping and deadline is None:
                grace = STARTING_GRACE if time.monotonic() - self.started < STARTING else STOP_GRACE
                deadline = time.monotonic() + grace
                log.info("stopping %s (up to %.0fs)", " ".join(self.command[3:]), grace)
            try:
                return self.child.wait(timeout=POLL if deadline is None else max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    log.error("%s did not stop within %.0fs; killing it", " ".join(self.command[3:]), grace)
                    self.child.kill()
                    return self.child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="run Nameko services, waiting for and surviving the broker")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("services", nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    try:  # a bad value stops here in one line naming its key, not in a loop of restarts
        Settings.from_config(config)
        brokers.nodes(config["AMQP_URI"])
    except (ConfigError, ValueError) as error:
        sys.exit(f"mensageria: {error}")
    logging.config.dictConfig(config["LOGGING"])  # the lines nameko run writes, in the same format
    logs.serving("launch")
    nameko = str(Path(sys.executable).parent / "nameko")
    command = [nameko, "run", "--config", args.config, *args.services]
    sys.exit(Supervisor(command, config["AMQP_URI"]).run())


if __name__ == "__main__":
    main()
