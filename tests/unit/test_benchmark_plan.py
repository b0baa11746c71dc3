"""The benchmark runner's plan over broker set-ups, and its ratios for rows that name one."""

import pytest

from benchmarks import brokers
from benchmarks.core import BACKENDS, Row, Scenario, plan
from benchmarks.report import add_ratios


def _measure(_ctx, _backend):
    return []


# shaped like the runner's registry: standalone, per backend, on the system, per broker set-up
SCENARIOS = [
    Scenario("a", "raw pika", _measure),
    Scenario("b", "Celery", _measure, BACKENDS),
    Scenario("c", "status changes", _measure, BACKENDS, True),
    Scenario("c", "the status service alone", _measure, BACKENDS, True),
    Scenario("d", "bulk job", _measure, BACKENDS, True),
    Scenario("q", "queue cost", _measure, per_setup=True),
]


def _steps(only: set[str], backends: tuple[str, ...], setups: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    return [(scenario.key, backend, setup) for scenario, backend, setup in plan(SCENARIOS, only, backends, setups)]


def test_by_default_every_system_scenario_runs_once_per_backend_on_the_default_set_up():
    steps = _steps({"a", "c", "d"}, ("sqlite", "postgresql"), (brokers.DEFAULT,))
    assert steps[0] == ("a", "-", None)  # standalone first, on the shared broker
    assert steps[1:] == [
        ("c", "sqlite", "quorum"),
        ("c", "sqlite", "quorum"),
        ("d", "sqlite", "quorum"),
        ("c", "postgresql", "quorum"),
        ("c", "postgresql", "quorum"),
        ("d", "postgresql", "quorum"),
    ]


def test_each_set_up_runs_its_queue_cost_then_each_backends_system_scenarios_together():
    steps = _steps({"b", "d", "q"}, ("sqlite",), ("classic", "cluster"))
    assert steps == [
        ("b", "sqlite", None),
        ("q", "-", "classic"),
        ("d", "sqlite", "classic"),
        ("q", "-", "cluster"),
        ("d", "sqlite", "cluster"),
    ]


def test_set_ups_are_named_from_a_list_and_an_unknown_one_is_refused():
    assert brokers.parse("classic, quorum,classic,cluster") == ("classic", "quorum", "cluster")
    with pytest.raises(ValueError, match="unknown broker set-ups \\['mirrored'\\]"):
        brokers.parse("quorum,mirrored")
    with pytest.raises(ValueError):
        brokers.parse(" , ")


def test_a_row_on_a_named_set_up_is_compared_with_celery_on_its_database():
    rows = [
        Row("a", "raw", "-", 1, 10_000.0, 1),
        Row("b", "celery", "sqlite", 2, 500.0, 1),
        Row("d", "bulk", "sqlite/quorum x3", 1, 2_000.0, 1),
        Row("q", "queue", "classic", 1, 5_000.0, 1),
    ]
    add_ratios(rows)
    assert rows[2].ratio_a == pytest.approx(0.2)
    assert rows[2].ratio_b == pytest.approx(4.0)
    assert rows[3].ratio_a == pytest.approx(0.5)
    assert rows[3].ratio_b is None


def test_the_applier_benchmark_names_statements_by_verb_and_table():
    from benchmarks.applier import Statements

    assert Statements.kind("UPDATE status_requests SET state=%(state)s WHERE status_requests.seq IN (1, 2)") == (
        "UPDATE status_requests"
    )
    assert Statements.kind("INSERT INTO outbox (event_type) VALUES (?)") == "INSERT outbox"
    assert Statements.kind('SELECT a FROM "student_statuses" JOIN x') == "SELECT student_statuses"
    assert Statements.kind("SAVEPOINT sa_1") == "SAVEPOINT"


def test_the_benchmarks_counts_refuse_what_counts_nothing():
    import argparse

    from benchmarks.infra import count, counts

    assert count("2000") == 2000 and counts("500,2000") == [500, 2000]
    for bad in ("0", "-1", "x", "1.5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            count(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        counts("500,x")
