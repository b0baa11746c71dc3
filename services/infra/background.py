"""Background loops: one step of work run whenever woken, polled, and backed off on failure.

:class:`Loop` is the loop itself, in a greenthread it is given a way to spawn: ``step()`` (one
round of work; it returns True when more is waiting) runs whenever the loop is woken (``wake()``,
cheap and coalescing), at least every ``poll_interval`` seconds, and straight away while it
reports more work; failures back off exponentially. ``end()`` wakes the loop and lets it
finish the step in hand (or run one more if it was idle).

:class:`BackgroundLoop` is a dependency provider that runs one such loop in the container:
subclasses implement :meth:`~BackgroundLoop.step`; ``nameko run``'s graceful stop (SIGTERM)
waits for the loop as above before the container stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.queue import Empty, LightQueue
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
STOP_GRACE = 10.0  # seconds a stopping loop gets to finish its step


class Loop:
    """A loop of :meth:`step` in a greenthread, mixed into a class that defines ``step`` (and
    ``poll_interval``): ``begin(spawn)``, ``wake()`` after recording work, ``end(grace)``."""

    poll_interval = 1.0
    running = False
    gt: Any = None
    wakeups: LightQueue | None = None

    def step(self) -> bool:
        raise NotImplementedError

    def begin(self, spawn: Callable) -> None:
        self.wakeups = LightQueue(maxsize=1)
        self.running = True
        self.gt = spawn(self._run)

    def wake(self) -> None:
        if self.wakeups is not None and self.wakeups.qsize() == 0:
            self.wakeups.put_nowait(None)

    def end(self, grace: float = STOP_GRACE) -> bool:
        """Let the step in hand end (a step stuck on a dead peer is killed after ``grace``
        seconds, so it cannot block the stop): whether it ended in time. A loop never begun
        (its service stopped while starting) has nothing to end."""
        self.running = False
        if self.gt is None:
            return True
        self.wake()
        with eventlet.Timeout(grace, False):
            self.gt.wait()
            return True
        self.gt.kill()
        return False

    def kill(self) -> None:
        self.running = False
        if self.gt is not None:
            self.gt.kill()

    def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                more = self.step()
                backoff = 0.5
            except Exception:  # broker or database away: the work stays recorded
                if not self.running:
                    return
                log.exception("%s failed; retrying in %.1fs", type(self).__name__, backoff)
                with contextlib.suppress(Empty):  # a wake-up (or stop) cuts the pause short
                    self.wakeups.get(timeout=backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if not self.running:
                return
            if more:
                eventlet.sleep(0)  # let workers and heartbeats run between batches
                continue
            with contextlib.suppress(Empty):
                self.wakeups.get(timeout=self.poll_interval)


class BackgroundLoop(Loop, DependencyProvider):
    """The container's loop: started with the service, ended (within ``STOP_GRACE``) when it stops."""

    def sibling(self, attr_name: str) -> Any:
        """Another dependency provider of the same service, by attribute name."""
        return next(d for d in self.container.dependencies if d.attr_name == attr_name)

    def start(self) -> None:
        self.begin(self.container.spawn_managed_thread)

    def stop(self) -> None:
        self.end(STOP_GRACE)
