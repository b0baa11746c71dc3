"""The status service's relay greenthread: one flush at a time, woken after commits, and on stop
the flush in hand finished before a last one publishes what the final batches left."""

from __future__ import annotations

import eventlet
from eventlet.event import Event

from services._status.applier import RelayThread


class RecordingRelay:
    """Counts flushes, notes any two at once, and can hold a flush until released or fail."""

    def __init__(self, failures: int = 0):
        self.flushes = 0
        self.running = 0
        self.overlapped = False
        self.failures = failures
        self.release: Event | None = None

    def flush(self) -> int:
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            if self.release is not None:
                self.release.wait()
            if self.failures:
                self.failures -= 1
                raise ConnectionError("broker away")
            self.flushes += 1
            return 0
        finally:
            self.running -= 1


def wait_until(predicate, timeout: float = 5.0) -> None:
    with eventlet.Timeout(timeout):
        while not predicate():
            eventlet.sleep(0.001)


def test_a_wake_flushes_once_more_and_a_stop_finishes_the_flush_in_hand_then_flushes_what_is_left():
    relay = RecordingRelay()
    thread = RelayThread(relay, poll_interval=60)  # no poll in the test's time: wakes only
    thread.begin(eventlet.spawn)
    wait_until(lambda: relay.flushes == 1)  # at start: what a predecessor left

    relay.release = Event()
    thread.wake()
    wait_until(lambda: relay.running == 1)  # a flush in hand, held
    thread.wake()  # wakes while it runs coalesce
    thread.wake()
    stopping = eventlet.spawn(thread.end, 5.0)
    eventlet.sleep(0.05)
    assert not stopping.dead, "stop waits for the flush in hand"
    relay.release.send(None)
    stopping.wait()

    assert relay.flushes == 3  # the first, the held one, and the stop's last
    assert not relay.overlapped
    assert thread.gt.dead


def test_a_failed_flush_is_retried_with_a_pause():
    relay = RecordingRelay(failures=2)
    thread = RelayThread(relay, poll_interval=60)
    thread.begin(eventlet.spawn)
    wait_until(lambda: relay.flushes == 1, timeout=5.0)  # after two failures (0.5 s, then 1 s)
    thread.kill()
    assert relay.failures == 0 and not relay.overlapped
