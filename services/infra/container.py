"""The service container every mensageria process runs (``SERVICE_CONTAINER_CLS`` in config.yaml).

``nameko run`` answers SIGTERM at any moment, its start included: it spawns the runner's
``stop`` beside a ``start`` still in progress. nameko 2.14.1's container then stops extensions
that may not be set up yet (their ``stop`` finds none of what ``setup`` makes, and the process
hangs until its supervisor kills it), and goes on setting up and starting the rest after they
were stopped. This container orders the two:

- a stop before the start began ends the container at once: the start that comes later does
  nothing (nothing was set up, nothing is left to stop);
- a stop while the extensions are being set up waits for their ``setup`` (local work: names,
  settings, engines; no thread, socket or connection), then ends the container: their ``start``
  never runs, so there is nothing to stop;
- a stop while they start (a queue consumer waiting for its broker, say) is nameko's own stop,
  which every extension handles there (see :class:`~services.infra.inbound.StoppableQueueConsumer`).
"""

from __future__ import annotations

import logging

from eventlet.event import Event
from nameko.containers import ServiceContainer

log = logging.getLogger(__name__)


class Container(ServiceContainer):
    def __init__(self, service_cls: type, config: dict):
        super().__init__(service_cls, config)
        self.stop_asked = False
        self.starting = False  # the extensions' start has begun: stopping is nameko's
        self.set_up = Event()  # sent when every extension's setup has returned (or raised)

    def start(self) -> None:
        if self.stop_asked:
            log.info("%s was stopped before it started: not starting it", self.service_name)
            return
        self.started = True
        try:
            self.extensions.all.setup()
        finally:
            self.set_up.send(None)
        if self.stop_asked:
            log.info("%s was stopped while setting up: not starting it", self.service_name)
            return
        self.starting = True
        self.extensions.all.start()
        log.debug("started %s", self)

    def stop(self) -> None:
        self.stop_asked = True
        if self.started:
            self.set_up.wait()
        if self.starting:
            super().stop()
            return
        self.started = False  # nothing started: nothing to stop; whoever waits learns it ended
        if not self._died.ready():
            self._died.send(None)
