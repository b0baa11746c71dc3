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
- With ``SCALE_<SERVICE>=MIN..MAX`` (one service module, ``MAX`` above 1) it runs a :class:`Pool`
  of such supervised instances and sizes it from the service's backlog (:mod:`tools.autoscale`;
  the README's "Autoscaling"). ``1..1``, the default, is the single supervisor above, unchanged.
- With ``GATEWAY_PROCESSES`` above 1 (``gateway.service`` alone), it runs that many supervised
  gateway processes on the gateway's one address: :class:`GatewayProcesses`.
- ``GATEWAY_MAX_WORKERS`` (``gateway.service`` alone) is the ``MAX_WORKERS`` of the gateway's
  processes: the requests each handles at once.
- ``NICE_<NAME>`` (one process of :data:`PROCESSES` alone) lowers the CPU priority of it and of
  everything it starts by that much: :func:`niceness`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import logging.config
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import prometheus_client

from services.infra import brokers, logs
from services.infra.config import load_config
from services.infra.settings import ConfigError, Settings
from tools import autoscale
from tools.preflight import broker_reachable, redacted

log = logging.getLogger("mensageria.launch")

MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a run this long resets the restart backoff
STOP_GRACE = 30.0  # seconds nameko gets to stop gracefully before it is killed
PR_SET_PDEATHSIG = 1
# every process of the system by name, as bin/run starts them (its loop lists the same modules)
PROCESSES = {
    "students": "services.students",
    "status": "services.status",
    "certificates": "services.certificates",
    "notifications": "services.notifications",
    "gateway": "gateway.service",
}
POLL = 0.5  # seconds between looks at whether a stop was asked
# nameko run stopped while it is still starting its services holds no work yet: a stop asked
# that early gets a short grace (services.infra.inbound.StoppableQueueConsumer lets it stop)
STARTING = 10.0
STARTING_GRACE = 5.0


def niceness(modules: list[str], settings: Settings) -> int:
    """How much lower the CPU priority of ``modules`` runs: ``NICE_<NAME>`` when they are one
    process of :data:`PROCESSES`, else 0 (several modules in one ``nameko run``: as started)."""
    names = [name for name, module in PROCESSES.items() if modules == [module]]
    return getattr(settings, f"nice_{names[0]}") if names else 0


def child_environment(modules: list[str], settings: Settings) -> dict[str, str]:
    """What the processes started for ``modules`` get in their environment beyond ours: the
    gateway's ``MAX_WORKERS`` is ``GATEWAY_MAX_WORKERS`` (when set)."""
    if modules == [PROCESSES["gateway"]] and settings.gateway_max_workers:
        return {"MAX_WORKERS": str(settings.gateway_max_workers)}
    return {}


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
    def __init__(self, command: list[str], amqp_uri: str, env: dict[str, str] | None = None):
        self.command = command
        self.amqp_uri = amqp_uri
        self.env = env
        self.child: subprocess.Popen | None = None
        self.started = 0.0
        self.stopping = False
        self.patient = False  # stopped to scale down: no kill while it finishes its work (see retire)
        self.signalled: subprocess.Popen | None = None
        self.lock = threading.RLock()  # re-entered by a signal handler in the same thread

    def forward(self, signum: int, _frame: object) -> None:
        """Ask ``nameko run`` to stop, once: with SIGTERM whatever arrived here.

        SIGTERM is the one stop nameko run handles at any moment (before its handler
        is installed it simply ends; a SIGINT during start-up is swallowed by
        eventlet's monkey-patching). Later signals (a Ctrl-C after a SIGTERM, the same
        signal from the group and from ``bin/run``) are not repeated: a second stop
        while nameko run stops leaves it hung."""
        self.patient = False  # a stop of the whole launcher: STOP_GRACE applies, even to an instance retiring
        self._stop()

    def retire(self) -> None:
        """Stop this instance to scale down: SIGTERM once; nameko run finishes the workers in hand
        and returns its unstarted messages to the queue (unacked), and is never killed for taking
        its time (a stop of the launcher itself still ends it within STOP_GRACE)."""
        self.patient = True
        log.info("retiring %s (pid %s): it finishes its work in hand first", " ".join(self.command[3:]), self._pid())
        self._stop()

    def _pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._signal_child()

    def _signal_child(self) -> None:
        """SIGTERM to ``nameko run``, once per child (from a signal handler or, scaling, another thread)."""
        with self.lock:
            child = self.child
            if child is not None and child is not self.signalled and child.poll() is None:
                self.signalled = child
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.forward)
        signal.signal(signal.SIGINT, self.forward)
        return self.loop()

    def loop(self) -> int:
        """Runs ``nameko run`` until a stop is asked, restarting it when it exits by itself."""
        delay = 1.0
        while not self.stopping:
            wait_for_broker(self.amqp_uri)
            if self.stopping:
                break
            started = self.started = time.monotonic()
            # a session of its own: a signal to our process group (Ctrl-C) reaches
            # nameko run once, through forward(), never also directly
            self.child = subprocess.Popen(
                self.command, env=self.env, preexec_fn=_die_with_parent, start_new_session=True
            )
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
            if self.stopping:
                self._signal_child()  # a stop asked while it was being started
            if self.stopping and deadline is None and not self.patient:
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


class Instances:
    """Instances of one command, each a :class:`Supervisor` in a thread of its own; a SIGTERM or
    SIGINT to this launcher stops them all (each within ``STOP_GRACE``)."""

    def __init__(self, command: list[str], amqp_uri: str):
        self.command = command
        self.amqp_uri = amqp_uri
        self.instances: list[tuple[Supervisor, threading.Thread]] = []
        self.retiring: list[tuple[Supervisor, threading.Thread]] = []
        self.statuses: list[int] = []
        self.stopping = False

    def stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        for supervisor, _ in self.instances + self.retiring:
            supervisor.forward(signum, frame)

    def handle_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def add(self, env: dict[str, str] | None) -> None:
        supervisor = Supervisor(self.command, self.amqp_uri, env)
        thread = threading.Thread(target=self._supervise, args=(supervisor,), daemon=True)
        self.instances.append((supervisor, thread))
        thread.start()

    def _supervise(self, supervisor: Supervisor) -> None:
        status = supervisor.loop()
        if not supervisor.patient:  # a retired instance's exit is no failure of the service's
            self.statuses.append(status)

    def finish(self) -> int:
        """Once a stop was asked: stops every instance, waits for them; the worst exit status."""
        for supervisor, _ in self.instances + self.retiring:
            supervisor.forward(signal.SIGTERM, None)
        for _, thread in self.instances + self.retiring:
            thread.join()
        return max([0, *self.statuses])


class GatewayProcesses(Instances):
    """``GATEWAY_PROCESSES`` gateway processes on one address (each listens with ``SO_REUSEPORT``:
    the kernel spreads the connections among them), a fixed number. They share a directory of
    their own (``GATEWAY_SIBLINGS_DIR``, mode 0700, removed when they have stopped), where each
    tells the others of its writes (:mod:`gateway.siblings`); process ``i`` serves its ``/metrics``
    on ``METRICS_PORT_GATEWAY - i`` (:func:`gateway_env`)."""

    def __init__(self, command: list[str], config: dict):
        super().__init__(command, config["AMQP_URI"])
        settings = Settings.from_config(config)
        self.count = settings.gateway_processes
        self.metrics_port = settings.metrics_port_gateway

    def run(self) -> int:
        self.handle_signals()
        directory = tempfile.mkdtemp(prefix="mensageria-gateway-")
        try:
            log.info("running %d gateway processes on one address", self.count)
            for index in range(self.count):
                self.add({**os.environ, **gateway_env(index, self.metrics_port, directory)})
            while not self.stopping:
                time.sleep(POLL)
            return self.finish()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def gateway_env(index: int, metrics_port: int, directory: str) -> dict[str, str]:
    """What gateway process ``index`` (from 0) of :class:`GatewayProcesses` gets in its environment.

    The first keeps ``METRICS_PORT_GATEWAY``; the next count down from it (9180, 9179, ...), below
    the services' ports (9181 on), so that every process can be scraped on one host; ``0``
    (or a port that would fall below 1) serves none."""
    port = metrics_port - index if metrics_port and metrics_port - index > 0 else 0
    return {"METRICS_PORT_GATEWAY": str(port), "GATEWAY_SIBLINGS_DIR": directory}


class Pool(Instances):
    """``MIN..MAX`` instances of one service (``SCALE_<SERVICE>``); every ``SCALE_INTERVAL``
    seconds its backlog decides how many (:mod:`tools.autoscale`). Scaling down retires the newest
    instance; the first one (which serves the service's ``/metrics``; the others serve none) runs
    for as long as the pool."""

    def __init__(self, command: list[str], config: dict, service: str, policy: autoscale.Policy):
        super().__init__(command, config["AMQP_URI"])
        settings = Settings.from_config(config)
        self.service = service
        self.policy = policy
        self.interval = settings.scale_interval
        self.metrics_port = getattr(settings, f"metrics_port_launch_{service}")
        self.reader = autoscale.BacklogReader(service, config, int(config.get("max_workers") or 10))
        self.window = autoscale.Window(policy.keep_alive)
        self.metrics = autoscale.ScaleMetrics()

    def run(self) -> int:
        self.handle_signals()
        self._serve_metrics()
        log.info(
            "scaling %s between %d and %d instances (target backlog %d each, keep-alive %gs)",
            self.service,
            self.policy.minimum,
            self.policy.maximum,
            self.policy.target,
            self.policy.keep_alive,
        )
        for _ in range(self.policy.minimum):
            self._add()
        self.metrics.instances.labels(self.service).set(len(self.instances))
        next_look = time.monotonic() + self.interval
        while not self.stopping:
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + self.interval
                self._look()
            self.retiring = [(s, thread) for s, thread in self.retiring if thread.is_alive()]
            time.sleep(min(POLL, self.interval))
        status = self.finish()
        self.reader.close()
        return status

    def _serve_metrics(self) -> None:
        if not self.metrics_port:
            return
        try:
            prometheus_client.start_http_server(self.metrics_port, registry=self.metrics.registry)
        except OSError as exc:
            log.error("metrics: cannot listen on port %d (%s); scaling without /metrics", self.metrics_port, exc)
            return
        log.info("metrics: the %s launcher serves /metrics on port %d", self.service, self.metrics_port)

    def _add(self) -> None:
        # the first instance serves the service's /metrics port; two processes cannot share it
        self.add(None if not self.instances else {**os.environ, f"METRICS_PORT_{self.service.upper()}": "0"})

    def _look(self) -> None:
        """Reads the backlog, decides, and starts or retires instances; one log line per change."""
        current = len(self.instances)
        try:
            backlog = self.reader.read(current)
        except Exception as exc:  # broker or management API away: no decision this time
            self.metrics.errors.labels(self.service).inc()
            log.warning("scale %s: backlog unknown (%s); keeping %d instances", self.service, exc, current)
            return
        now = time.monotonic()
        desired = autoscale.decide(current, backlog.total, self.window.recent(now), self.policy)
        self.window.add(now, autoscale.recommend(current, backlog.total, self.policy))
        self.metrics.backlog.labels(self.service).set(backlog.total)
        self.metrics.desired.labels(self.service).set(desired)
        if desired < current and time.monotonic() - self.instances[-1][0].started < STARTING:
            return  # the newest retires once it has started: stopping it earlier would waste its start
        if desired == current:
            return
        reason = "backlog" if desired > current else "keep_alive_lower"
        log.info(
            "scale service=%s from=%d to=%d backlog=%d messages=%d work=%d utilisation=%s reason=%s",
            self.service,
            current,
            desired,
            backlog.total,
            backlog.messages,
            backlog.work,
            "-" if backlog.utilisation is None else f"{backlog.utilisation:.2f}",
            reason,
        )
        self.metrics.events.labels(self.service, "up" if desired > current else "down", reason).inc()
        while len(self.instances) < desired:
            self._add()
        while len(self.instances) > desired:
            supervisor, thread = self.instances.pop()  # the newest
            supervisor.retire()
            self.retiring.append((supervisor, thread))
        self.metrics.instances.labels(self.service).set(len(self.instances))


def main() -> None:
    parser = argparse.ArgumentParser(description="run Nameko services, waiting for and surviving the broker")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("services", nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    service = autoscale.service_of(args.services)
    try:  # a bad value stops here in one line naming its key, not in a loop of restarts
        settings = Settings.from_config(config)
        brokers.nodes(config["AMQP_URI"])
        policy = autoscale.Policy.for_service(service, config) if service else None
    except (ConfigError, ValueError) as error:
        sys.exit(f"mensageria: {error}")
    logging.config.dictConfig(config["LOGGING"])  # the lines nameko run writes, in the same format
    logs.serving("launch")
    os.environ.update(child_environment(args.services, settings))  # every process it starts inherits it
    if nice := niceness(args.services, settings):
        os.nice(nice)  # this supervisor and every process it starts (they inherit it)
        log.info("%s runs at niceness %d", " ".join(args.services), os.nice(0))
    nameko = str(Path(sys.executable).parent / "nameko")
    command = [nameko, "run", "--config", args.config, *args.services]
    if policy is not None and policy.maximum > 1:
        sys.exit(Pool(command, config, service, policy).run())
    if args.services == [PROCESSES["gateway"]] and settings.gateway_processes > 1:
        sys.exit(GatewayProcesses(command, config).run())
    sys.exit(Supervisor(command, config["AMQP_URI"]).run())


if __name__ == "__main__":
    main()
