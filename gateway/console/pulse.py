"""The console's live view: one sampler per gateway process, one Server-Sent Events stream per page.

Every ``SAMPLE_SECONDS`` the gateway asks the services for their state (the status service's backlog,
outbox and running totals, the mail log, the dead letters, whether each service answers) and keeps
the last hour of samples in memory. Rates are differences of running totals (ids that only grow),
so they cost one indexed ``max()`` each. Every open console page holds one stream
(``GET /ops/live``) that gets the hour so far, then each new sample as it is taken: N open pages
cost one sampling loop plus N small writes, not N pollers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import eventlet
import requests
from eventlet.queue import Full, LightQueue
from nameko.constants import AMQP_URI_CONFIG_KEY

from gateway.console import queues
from services.exceptions import ServiceError
from services.infra.background import BackgroundLoop
from services.infra.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
HOUR = 3600.0
SERVICES = ("students", "status", "certificates", "notifications")
QUEUE_SIZE = 16  # samples a slow page may fall behind before it misses some
END = object()
JOB_FIELDS = ("state", "total", "pending", "applied", "rejected", "failed", "rows_per_second")


class ConsolePulse(BackgroundLoop):
    """``pulse.subscribe()`` → a queue of samples; ``pulse.history()`` → the last hour."""

    poll_interval = SAMPLE_SECONDS

    def setup(self) -> None:
        super().setup()
        self.samples: deque[dict] = deque(maxlen=int(HOUR / SAMPLE_SECONDS) + 1)
        self.subscribers: set[LightQueue] = set()

    def start(self) -> None:
        self.proxies = {name: self.sibling(name).background() for name in SERVICES}
        settings = Settings.from_config(self.container.config)
        self.rabbit_api_uri = settings.rabbit_api_uri
        self.vhost = queues.vhost_of(self.container.config[AMQP_URI_CONFIG_KEY])
        super().start()

    def queues(self) -> list[dict] | None:
        """Every queue's depth and consumers from the management API; None when not configured or away."""
        if not self.rabbit_api_uri:
            return None
        try:
            return queues.read(self.rabbit_api_uri, self.vhost, SAMPLE_SECONDS / 2)
        except (requests.RequestException, ValueError, KeyError) as exc:
            log.warning("console: the management API did not answer (%s)", type(exc).__name__)
            return None

    def stop(self) -> None:
        for queue in list(self.subscribers):  # open streams end, so the server can stop
            _offer(queue, END)
        super().stop()

    def get_dependency(self, worker_ctx: Any) -> ConsolePulse:
        return self

    def subscribe(self) -> LightQueue:
        queue = LightQueue(maxsize=QUEUE_SIZE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: LightQueue) -> None:
        self.subscribers.discard(queue)

    def history(self) -> list[dict]:
        return list(self.samples)

    def step(self) -> bool:
        sample = self.take()
        self.samples.append(sample)
        for queue in list(self.subscribers):
            _offer(queue, sample)
        return False

    def take(self) -> dict:
        """One sample: every call at once, each within its own timeout."""
        calls = {
            **{f"up:{name}": (name, "ping") for name in SERVICES},
            "status": ("status", "get_overview"),
            "mail": ("notifications", "get_overview"),
            **{f"dead:{name}": (name, "count_dead_letters") for name in SERVICES},
        }
        pool = eventlet.GreenPool(len(calls) + 1)
        broker = pool.spawn(self.queues)
        names = list(calls)
        answers = dict(zip(names, pool.imap(lambda name: self._ask(*calls[name]), names), strict=True))
        table = broker.wait()
        sample: dict[str, Any] = {"t": round(time.time(), 3)}
        sample["up"] = {name: answers[f"up:{name}"] is not None for name in SERVICES}
        sample["dead_letters"] = {name: answers[f"dead:{name}"] for name in SERVICES}
        status, mail = answers["status"] or {}, answers["mail"] or {}
        for key in ("pending", "oldest_pending_age", "outbox_pending", "outbox_oldest_age"):
            sample[key] = status.get(key)
        sample["mail_pending"], sample["mail_failed"] = mail.get("pending"), mail.get("failed")
        sample["queues"] = queues.by_service(table) if table is not None else None
        previous = self.samples[-1] if self.samples else None
        for name, total in (
            ("applied", status.get("applied_total")),
            ("recorded", status.get("recorded_total")),
            ("mails", mail.get("mails_total")),
        ):
            sample[f"{name}_total"] = total
            sample[f"{name}_per_second"] = _rate(previous, sample, f"{name}_total")
        return sample

    def job_progress(self, job_id: str) -> dict | None:
        """A job's counts (no row errors) for its page, or None if they cannot be had now."""
        try:
            job = self.proxies["status"].call("get_job", SAMPLE_SECONDS / 2, job_id, 0)
        except ServiceError:
            return None
        return {
            key: job[key] for key in ("state", "total", "pending", "applied", "rejected", "failed", "rows_per_second")
        }

    def _ask(self, service: str, method: str) -> Any:
        try:
            return self.proxies[service].call(method, SAMPLE_SECONDS / 2)
        except ServiceError:
            return None


def _rate(previous: dict | None, sample: dict, key: str) -> float | None:
    if previous is None or previous.get(key) is None or sample.get(key) is None:
        return None
    elapsed = sample["t"] - previous["t"]
    return round(max(sample[key] - previous[key], 0) / elapsed, 2) if elapsed > 0 else None


def _offer(queue: LightQueue, item: Any) -> None:
    with contextlib.suppress(Full):  # a page that does not read misses samples; the sampler never waits
        queue.put_nowait(item)
        return
    if item is END:  # the end must get through: make room for it
        with contextlib.suppress(Exception):
            queue.get_nowait()
        with contextlib.suppress(Full):
            queue.put_nowait(item)


def event(name: str, data: Any) -> str:
    """One Server-Sent Event."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
