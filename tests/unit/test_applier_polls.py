"""How often the status applier looks for students it does not know: every poll interval after
requests were recorded, backing off while none come (a bulk job's upload), back at once when one
does."""

from __future__ import annotations

import itertools

from services._status import applier as applier_module
from services._status import batches
from services._status.applier import BACKLOG_RESOLVE_INTERVAL, StatusApplier


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class NoSession:
    """Stands for the session factory: the batch itself is not this test's business."""

    def __call__(self):
        return self

    def begin(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def an_applier(monkeypatch) -> tuple[StatusApplier, Clock, list[float]]:
    clock, scans = Clock(), []
    monkeypatch.setattr(applier_module.time, "monotonic", clock)
    monkeypatch.setattr(batches, "due_unknown_students", lambda session, limit: scans.append(clock.now) or set())
    monkeypatch.setattr(batches, "apply_pending", lambda session, limit, message_bytes: batches.BatchResult())
    applier = StatusApplier()
    applier.setup()
    applier.Session, applier.batch_size, applier.message_bytes = NoSession(), 2000, 1024
    applier.resolve_after, applier.resolve_interval, applier.backlog = 0.0, applier.poll_interval, False
    return applier, clock, scans


def run_at(applier: StatusApplier, clock: Clock, times: list[float]) -> None:
    for at in times:
        clock.now = 100.0 + at
        applier.run_once()


def test_with_nothing_recorded_the_looks_back_off_to_the_backlog_interval(monkeypatch):
    applier, clock, scans = an_applier(monkeypatch)
    run_at(applier, clock, [x / 10 for x in range(0, 300)])  # a poll every 0.1 s for 30 s
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(scans)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert set(gaps[4:]) == {BACKLOG_RESOLVE_INTERVAL}


def test_a_recorded_request_brings_the_next_look_within_a_poll_interval(monkeypatch):
    applier, clock, scans = an_applier(monkeypatch)
    run_at(applier, clock, [x / 10 for x in range(0, 100)])  # backed off: next look at +12.5 s
    clock.now = 100.0 + 10.0
    applier.recorded()
    run_at(applier, clock, [10.0, 10.2, 10.4, 10.5, 10.6])
    assert [round(at - 100.0, 1) for at in scans][-1] == 10.5
    assert applier.resolve_interval == 2 * applier.poll_interval  # the looks back off again from there
