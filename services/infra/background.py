"""A dependency provider that runs one background loop in the container.

Subclasses implement :meth:`step` (one round of work; return True when more is
waiting). The loop runs a step whenever it is woken (``wake()``, cheap and
coalescing), at least every ``poll_interval`` seconds, and straight away while
``step`` reports more work; failures back off exponentially. ``stop()`` (SIGTERM,
``nameko run``'s graceful stop) wakes the loop and lets it finish the step in
hand (or run one more if it was idle) before the container stops.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import eventlet
from eventlet.queue import Empty, LightQueue
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
STOP_GRACE = 10.0  # seconds a stopping loop gets to finish its step


class BackgroundLoop(DependencyProvider):
    poll_interval = 1.0

    def setup(self) -> None:
        self.wakeups: LightQueue = LightQueue(maxsize=1)
        self.running = False

    def sibling(self, attr_name: str) -> Any:
        """Another dependency provider of the same service, by attribute name."""
        return next(d for d in self.container.dependencies if d.attr_name == attr_name)

    def start(self) -> None:
        self.running = True
        self.gt = self.container.spawn_managed_thread(self._run)

    def stop(self) -> None:
        self.running = False
        self.wake()
        with eventlet.Timeout(STOP_GRACE, False):  # a step stuck on a dead peer must not block the stop
            self.gt.wait()
        self.gt.kill()

    def kill(self) -> None:
        self.running = False
        self.gt.kill()

    def wake(self) -> None:
        if self.wakeups.qsize() == 0:
            self.wakeups.put_nowait(None)

    def step(self) -> bool:
        raise NotImplementedError

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
