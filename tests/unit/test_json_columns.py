"""JSON columns through the engines' orjson encoder: what the standard library wrote and read still
is, in a real SQLite file and in PostgreSQL when the test run has one."""

from __future__ import annotations

import json
import math

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select, text

from services.infra.db import build_engine, json_dumps, json_loads
from tests.conftest import pg_admin_uri

VALUES = [
    {"changes": [{"student_id": 7, "reason": 'matrícula 😀 "quoted" \\ \n\x7f', "actor": None}]},
    {"beyond 64 bits": 2**70, "negative": -(2**80)},  # orjson refuses these: the standard library writes them
    {1: "an integer key", None: "a null key", False: "a false key"},  # keys become text, as json.dumps makes them
    ["list", 1, 2.5, None, True, {"nested": []}],
]


@pytest.mark.parametrize("value", VALUES)
def test_what_is_written_reads_back_as_the_standard_library_would(value):
    assert json_loads(json_dumps(value)) == json.loads(json.dumps(value))


def test_text_only_the_standard_library_reads_is_still_read():
    assert math.isnan(json_loads('{"x": NaN}')["x"])
    assert json_loads('{"x": Infinity}')["x"] == math.inf


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = build_engine(f"sqlite:///{tmp_path}/json.db")
    else:
        engine = build_engine(pg_admin_uri())  # the test run's PostgreSQL (a table of its own, dropped)
    yield engine
    engine.dispose()


def test_a_json_column_round_trips_through_the_engine(engine, unique):
    table = Table(
        f"json_{unique}".replace("-", "_"), MetaData(), Column("id", Integer, primary_key=True), Column("v", JSON)
    )
    table.create(engine)
    try:
        with engine.begin() as connection:
            connection.execute(insert(table), [{"id": n, "v": value} for n, value in enumerate(VALUES)])
            connection.execute(text(f"INSERT INTO {table.name} (id, v) VALUES (99, '{{\"x\": 1}}')"))
        with engine.connect() as connection:
            read = dict(connection.execute(select(table.c.id, table.c.v)).all())
        assert [read[n] for n in range(len(VALUES))] == [json.loads(json.dumps(v)) for v in VALUES]
        assert read[99] == {"x": 1}
    finally:
        table.drop(engine)
