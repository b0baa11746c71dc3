"""Rows written through the driver by ``insert_many`` read back as SQLAlchemy's own insert writes them
(timestamps, JSON, text beyond ASCII, defaults for columns left out), in a real SQLite file and in the
test run's PostgreSQL; duplicates skipped only when asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.infra import db as db_module
from services.infra.db import among, build_engine, insert_many
from services.infra.models import UTCDateTime, utcnow
from tests.conftest import pg_admin_uri

AT = datetime(2026, 12, 6, 8, 30, 15, 123456, tzinfo=UTC)
ROWS = [
    {"name": "Zé 😀", "at": AT, "data": {"changes": [1, 2]}, "flag": True},
    {"name": "second", "at": AT, "data": 1, "flag": False},  # 1 and True: equal in Python, not in JSON
    {"name": "third", "at": AT.astimezone(timezone(timedelta(hours=-3))), "data": True, "flag": True},
    {"name": 'quote " and \\', "at": AT + timedelta(microseconds=1), "data": None, "flag": False},
    {"name": "tab\tnew\nline\rCR \\N \\. \x0b\u2028", "at": None, "data": "\\N", "flag": None},
    {"name": "", "at": AT, "data": {"k": "a\tb\\"}, "flag": True},  # empty text, not NULL
]


def a_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(50), unique=True),
        Column("at", UTCDateTime),
        Column("data", JSON),
        Column("flag", Boolean),
        Column("count", Integer, default=7),  # left out of the rows: defaults fill them
        Column("created_at", UTCDateTime, default=utcnow),
    )


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-copy"])
def db(request, tmp_path, unique, monkeypatch):
    if request.param == "postgresql-copy":  # the rows go by COPY however few they are
        monkeypatch.setattr(db_module, "COPY_ROWS", 1)
    if request.param == "sqlite":
        engine = build_engine(f"sqlite:///{tmp_path}/insert.db")
    else:
        engine = build_engine(pg_admin_uri())  # the test run's PostgreSQL (tables of its own, dropped)
    tables = [a_table(f"{kind}_{unique}".replace("-", "_")) for kind in ("fast", "core")]
    for table in tables:
        table.create(engine)
    yield sessionmaker(bind=engine), *tables
    for table in tables:
        table.drop(engine)
    engine.dispose()


def read(session, table: Table) -> list[tuple]:
    c = table.c
    return session.execute(select(c.id, c.name, c.at, c.data, c.flag, c.count).order_by(c.id)).all()


def test_rows_read_back_as_sqlalchemy_s_insert_writes_them(db):
    Session, fast, core = db
    before = utcnow()
    with Session.begin() as session:
        insert_many(session, fast, ROWS)
        session.execute(insert(core), ROWS)
    with Session() as session:
        written, expected = read(session, fast), read(session, core)
        created = session.scalars(select(fast.c.created_at)).all()
    assert written == expected
    assert [row.data for row in written] == [{"changes": [1, 2]}, 1, True, None, "\\N", {"k": "a\tb\\"}]
    assert [row.name for row in written] == [row["name"] for row in ROWS]
    assert written[2].at == AT and written[2].at.tzinfo is not None
    assert {row.count for row in written} == {7}
    assert all(at >= before.replace(microsecond=0) for at in created)


def test_duplicates_are_skipped_only_when_asked(db):
    Session, fast, _ = db
    with Session.begin() as session:
        insert_many(session, fast, ROWS[:2])
    with Session.begin() as session:
        insert_many(session, fast, ROWS, ignore_duplicates=True)
    with pytest.raises(IntegrityError), Session.begin() as session:
        insert_many(session, fast, [{**ROWS[0], "name": "new"}, ROWS[3]])
    with Session() as session:
        names = [row.name for row in read(session, fast)]
    assert names == [row["name"] for row in ROWS]  # the refused batch left nothing


def test_a_large_batch_goes_whole_and_in_order(db):
    """Megabytes at once (by COPY on PostgreSQL), repeats skipped, the serial key in the rows' order."""
    Session, fast, _ = db
    rows = [{"name": f"row {n:05d} " + "x" * 30, "at": AT, "data": {"n": n}, "flag": n % 2 == 0} for n in range(20_000)]
    with Session.begin() as session:
        insert_many(session, fast, rows[:5])
        insert_many(session, fast, rows[3:] + rows[:2], ignore_duplicates=True)
    with Session() as session:
        written = read(session, fast)
    assert [row.name for row in written] == [row["name"] for row in rows]
    assert [row.data["n"] for row in written] == list(range(20_000))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab\\\t\n\r Ná😀")))),
        st.lists(st.integers()),
        st.lists(st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=3))),
    ).filter(bool)
)
def test_a_column_in_copy_text_is_each_value_in_copy_text(values):
    """Columns of text or integers take a quicker way to COPY's text format: the same text."""
    assert db_module._copy_column(values) == [db_module._copy_text(value) for value in values]


@pytest.mark.parametrize("wanted", [[2, 4, 5], [], [99]])
def test_among_selects_the_rows_whose_integer_is_in_the_list(db, wanted):
    """``among``: an ``IN`` on SQLite, ``= ANY(array)`` on PostgreSQL; the same rows either way."""
    Session, fast, _ = db
    with Session.begin() as session:
        insert_many(session, fast, [{"name": f"row {n}", "count": n} for n in range(1, 7)])
    with Session() as session:
        found = session.scalars(select(fast.c.count).where(among(session, fast.c.count, wanted))).all()
    assert sorted(found) == sorted(n for n in wanted if 1 <= n <= 6)


@pytest.mark.parametrize("wanted", [["row 2", 'Zoë\'s "row"', "línea\t3"], ["nowhere", ""], [], ["row 1", "row 1"]])
def test_among_selects_the_rows_whose_text_is_in_the_list(db, wanted):
    """Text too, quotes, tabs and letters beyond ASCII included (SQLite reads the list as JSON)."""
    Session, fast, _ = db
    names = ["row 1", "row 2", 'Zoë\'s "row"', "línea\t3"]
    with Session.begin() as session:
        insert_many(session, fast, [{"name": name, "count": n} for n, name in enumerate(names)])
    with Session() as session:
        found = session.scalars(select(fast.c.name).where(among(session, fast.c.name, wanted))).all()
    assert sorted(found) == sorted(set(wanted) & set(names))
