"""Autoscaling's decision (a pure function) and its settings; the launcher's side is in
tests/e2e/test_autoscale.py."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from services.infra.settings import ConfigError
from tools.autoscale import Policy, Window, decide, queue_names, recommend, scale_range, service_of

ROOT = Path(__file__).resolve().parents[2]
POLICY = Policy(minimum=1, maximum=4, target=10, keep_alive=30.0)


@pytest.mark.parametrize(("raw", "expected"), [("1..1", (1, 1)), ("1..4", (1, 4)), (" 2 .. 8 ", (2, 8))])
def test_a_range_is_min_dot_dot_max(raw, expected):
    assert scale_range("SCALE_NOTIFICATIONS", raw) == expected


@pytest.mark.parametrize("raw", ["4..1", "0..0", "0..3", "x", "", "1-4", "1..", "-1..2", "1.5..3"])
def test_a_bad_range_names_its_setting(raw):
    with pytest.raises(ConfigError, match=r"^config: SCALE_NOTIFICATIONS must be MIN\.\.MAX") as error:
        scale_range("SCALE_NOTIFICATIONS", raw)
    assert "\n" not in str(error.value) and repr(raw) in str(error.value)


def test_make_run_refuses_a_bad_range_in_one_line():
    raw = "4..1"
    result = subprocess.run(
        [sys.executable, "-m", "tools.autoscale", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore::DeprecationWarning", "SCALE_CERTIFICATES": raw},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"mensageria: config: SCALE_CERTIFICATES must be MIN..MAX instances with 1 <= MIN <= MAX (e.g. 1..4), "
        f"got {raw!r}"
    ]


def test_several_instances_need_postgresql_but_notifications_may_share_a_sqlite_file():
    config = {"SCALE_CERTIFICATES": "1..4", "DB_URIS": {"certificates:CertificatesBase": "sqlite:///c.db"}}
    with pytest.raises(ConfigError, match=r"SCALE_CERTIFICATES=1\.\.4 needs PostgreSQL: CERTIFICATES_DB_URI"):
        Policy.for_service("certificates", config)
    config = {"SCALE_NOTIFICATIONS": "1..4", "DB_URIS": {"notifications:NotificationsBase": "sqlite:///n.db"}}
    assert Policy.for_service("notifications", config) == Policy(1, 4, 10, 30.0)
    config["DB_URIS"] = {"notifications:NotificationsBase": "postgresql+psycopg2://db/notifications"}
    assert Policy.for_service("notifications", {**config, "max_workers": 7}) == Policy(1, 4, 7, 30.0)
    assert Policy.for_service("notifications", {**config, "SCALE_TARGET": "25"}).target == 25


def test_the_launched_module_names_the_scaled_service():
    assert service_of(["services.notifications"]) == "notifications"
    assert service_of(["gateway.service"]) is None  # it listens on a port: one instance
    assert service_of(["services.students", "services.status"]) is None


def test_the_queues_watched_come_from_the_topology():
    assert queue_names("notifications", {}) == [
        "rpc-notifications",
        "evt-status-student_status_changed--notifications.handle_student_status_changed",
        "evt-certificates-certificate_issued--notifications.handle_certificate_issued",
    ]


class TestDecide:
    def test_the_hpa_arithmetic(self):
        assert recommend(1, 0, POLICY) == 0
        assert recommend(1, 31, POLICY) == 4  # ceil(31 / 10)
        assert recommend(2, 21, POLICY) == 2  # within 10% of what two hold: no change

    def test_up_at_once_capped_per_step(self):
        big = Policy(1, 40, target=10)
        assert decide(1, 400, [], big) == 5  # +4 beats x2
        assert decide(8, 400, [], big) == 16  # x2 beats +4
        assert decide(1, 400, [], POLICY) == 4  # and never above MAX

    def test_down_only_when_every_recommendation_of_the_keep_alive_was_lower(self):
        assert decide(4, 0, [4, 3, 0], POLICY) == 4
        assert decide(4, 0, [2, 1, 0], POLICY) == 2  # the highest of the window
        assert decide(4, 0, [0, 0], POLICY) == 1  # never below MIN

    def test_within_the_tolerance_nothing_changes(self):
        assert decide(3, 31, [], POLICY) == 3
        assert decide(3, 29, [], POLICY) == 3

    def test_a_size_outside_the_range_is_brought_into_it(self):
        assert decide(6, 1000, [], POLICY) == 4
        assert decide(0, 0, [], Policy(2, 4)) == 2

    def test_the_window_keeps_the_keep_alive(self):
        window = Window(30.0)
        for second, recommendation in enumerate([4, 4, 1, 1]):
            window.add(second * 10.0, recommendation)
        assert window.recent(31.0) == [4, 1, 1]  # the one at 0 s is older than 30 s
        assert window.recent(100.0) == []


def simulate(seed: int, minutes: int, load: float, seconds_per_message: float = 0.2) -> list[float]:
    """A queue served by ``max_workers`` (10) workers an instance, each message ``seconds_per_message``;
    arrivals at random (Poisson) at ``load`` x one instance's capacity; the launcher looks every
    second and decides. Returns the (simulated) times the size changed."""
    rng = random.Random(seed)
    tick, workers_each = 0.01, POLICY.target
    rate = load * workers_each / seconds_per_message * tick  # arrivals per tick
    instances, window, changes = 1, Window(POLICY.keep_alive), []
    waiting, busy = 0, deque()  # busy: finish times of the messages in hand
    for step in range(int(minutes * 60 / tick)):
        now = step * tick
        waiting += _poisson(rng, rate)
        while busy and busy[0] <= now:
            busy.popleft()
        while waiting and len(busy) < instances * workers_each:
            waiting -= 1
            busy.append(now + seconds_per_message)
        if step % int(1 / tick) == 0:  # the launcher's look, once a second
            backlog = waiting + len(busy)  # ready + unacknowledged
            desired = decide(instances, backlog, window.recent(now), POLICY)
            window.add(now, recommend(instances, backlog, POLICY))
            if desired != instances:
                changes.append(now)
                instances = desired
    return changes


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count, product = count + 1, product * rng.random()
    return count


@pytest.mark.parametrize("seed", range(5))
def test_at_80_percent_of_one_instance_it_changes_size_at_most_twice_a_minute(seed):
    changes = simulate(seed, minutes=10, load=0.8)
    per_minute = [sum(1 for t in changes if start <= t < start + 60) for start in range(0, 600 - 59)]
    assert max(per_minute) <= 2, changes


def test_at_three_times_one_instance_it_grows_at_once_and_stays():
    assert simulate(0, minutes=3, load=3.0)[:1] == [1.0]  # the first look after the load came: one change, to 4
    assert len(simulate(0, minutes=3, load=3.0)) == 1
