"""The one place that builds database engines and sessions.

A service declares ``db = Database(Base)`` (nameko-sqlalchemy's provider, configured
for SQLite and PostgreSQL alike); its workers and background loops get the same
session factory. There is one idiom for a transaction and one for a read::

    with self.db.begin() as session:   # commits at the end, rolls back on an error
        repo.create(session, fields)

    with self.db() as session:         # a read: closed at the end, nothing committed
        return schema.dump(repo.get(session, student_id))

Rule for every transaction in this code base: it is short and never spans
network I/O (RPC, publishing). Under eventlet, database drivers block the
whole process, so a transaction that yielded while holding a lock could be
waited on by another greenthread of the same process forever.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import warnings
import zlib
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, any_, bindparam, create_engine, event, func, literal_column, select
from sqlalchemy import exc as exc_module
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from services.infra.settings import Settings

with warnings.catch_warnings():  # tools build engines too: keep eventlet's notice off their output
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from nameko_sqlalchemy import Database as _Database

SQLITE_BUSY_TIMEOUT_MS = 15_000
SQLITE_SYNCHRONOUS = ("full", "normal")


def build_engine(uri: str, sqlite_synchronous: str = "full", **options: Any) -> Engine:
    """An engine with the settings this project relies on for either database.

    SQLite runs in WAL mode with ``synchronous=FULL`` (``SQLITE_SYNCHRONOUS``): a commit is on
    disk when it returns, so what a service acked after committing survives a power loss too.
    ``normal`` syncs the WAL only at checkpoints: as safe against a process crash, but the last
    commits before a power loss or an OS crash can be undone after the broker was told they
    were done (the README's Configuration)."""
    url = make_url(uri)
    options.setdefault("json_serializer", json_dumps)
    options.setdefault("json_deserializer", json_loads)
    if url.get_backend_name() == "sqlite":
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}, not {sqlite_synchronous!r}")
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_engine(url, **options)
        event.listen(engine, "connect", partial(_sqlite_pragmas, synchronous=sqlite_synchronous.upper()))
        return engine
    options.setdefault("pool_pre_ping", True)
    if url.get_driver_name() == "psycopg2":  # executemany of UPDATEs in pages, not one round trip a row
        options.setdefault("executemany_mode", "values_plus_batch")
    if "poolclass" not in options:  # a pool of another kind takes no size
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 10)
    return create_engine(url, **options)


def json_dumps(value: Any) -> str:
    """JSON columns' encoder (outbox payloads, audit targets, job errors): orjson, a tenth of the
    standard library's cost for a batch's events; the standard library for what orjson refuses
    (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """JSON columns' decoder: orjson; the standard library for what only it reads (``NaN``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database(_Database):
    """nameko-sqlalchemy's ``Database`` with :func:`build_engine`'s engine; a worker
    gets the session factory (SQLAlchemy's own ``Session``: ``with db()`` closes,
    ``with db.begin()`` commits).

    Config: ``DB_URIS: {"<service>:<BaseName>": uri}``.
    """

    def setup(self) -> None:
        super().setup()
        self.engine.dispose()
        synchronous = Settings.from_config(self.container.config).sqlite_synchronous
        self.engine = build_engine(self.db_uri, sqlite_synchronous=synchronous, **self.engine_options)
        self.Session = sessionmaker(bind=self.engine, **self.session_options)

    def get_dependency(self, worker_ctx: Any) -> sessionmaker:
        return self.Session

    def worker_teardown(self, worker_ctx: Any) -> None:
        pass  # every session is closed by the `with` block that opened it


def db_uri(config: dict, service_name: str, base: type) -> str:
    return config["DB_URIS"][f"{service_name}:{base.__name__}"]


def insert_or_ignore(session: Session, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table``, for the session's database."""
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    return insert(table).on_conflict_do_nothing()


def among(session: Session, column: Any, values: list) -> ColumnElement[bool]:
    """``column IN values`` (integers or text) with the list as one parameter for the driver:
    ``column = ANY(array)`` on PostgreSQL, ``column IN (SELECT value FROM json_each(list))`` on
    SQLite. SQLAlchemy renders and binds a plain ``IN`` of 2,000 values one by one on every
    execution, ≈ 2 µs a value, as much as the database takes to update its row."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    listed = select(literal_column("value")).select_from(func.json_each(bindparam(None, json_dumps(list(values)))))
    return column.in_(listed.scalar_subquery())


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict]) -> None:
    """Many rows in one executemany: a redelivered or repeated row is skipped
    instead of failing the batch."""
    insert_many(session, table, rows, ignore_duplicates=True)


VALUES_PAGE = 1000  # rows in one multi-row INSERT on PostgreSQL
COPY_ROWS = 200  # from this many rows, PostgreSQL is sent them by COPY (about 2.5 times faster)


def insert_many(session: Session, table: Table, rows: list[dict], ignore_duplicates: bool = False) -> None:
    """``rows`` (dicts with the same keys) into ``table`` in this session's transaction, each value
    bound as its column's type binds it, as one statement for the driver: SQLite's ``executemany``;
    on PostgreSQL ``COPY`` from ``COPY_ROWS`` rows (through a temporary table when duplicates are
    skipped), a multi-row ``VALUES`` a page at a time below that. SQLAlchemy's own executemany
    builds and converts every row's parameters one by one (30 to 45% of the cost of recording a
    job's rows); here a column's conversion runs once per distinct value of the batch (a batch's
    timestamps are one value). Columns left out take their defaults, as with SQLAlchemy's insert;
    rows are inserted in their order (a serial key numbers them so). With ``ignore_duplicates``,
    a row that breaks a unique constraint is skipped."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0])
    columns = [table.c[key] for key in keys]
    values = [[row[key] for row in rows] for key in keys]
    for column in table.columns:  # Python-side defaults, as the Core insert fills them in
        if column.key not in rows[0] and column.default is not None:
            default = column.default
            columns.append(column)
            values.append([default.arg(None) if default.is_callable else default.arg for _ in rows])
    values = [
        _bound(c.type.dialect_impl(dialect).bind_processor(dialect), v) for c, v in zip(columns, values, strict=True)
    ]
    preparer = dialect.identifier_preparer
    names = ", ".join(preparer.format_column(column) for column in columns)
    head = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES "
    tail = " ON CONFLICT DO NOTHING" if ignore_duplicates else ""
    one = f"({', '.join([_MARKERS[dialect.paramstyle]] * len(columns))})"
    tuples = list(zip(*values, strict=True))
    if dialect.name == "sqlite":
        connection.exec_driver_sql(f"{head}{one}{tail}", tuples)
        return
    if dialect.driver == "psycopg2" and len(tuples) >= COPY_ROWS:
        data = _copy_data(values, numbered=ignore_duplicates)
        if data is not None:
            _copy(connection, preparer.format_table(table), names, data, ignore_duplicates)
            return
    for first in range(0, len(tuples), VALUES_PAGE):  # one statement a page, as its driver spells it
        page = tuples[first : first + VALUES_PAGE]
        connection.exec_driver_sql(f"{head}{', '.join([one] * len(page))}{tail}", tuple(chain.from_iterable(page)))


def _copy(connection: Connection, table: str, names: str, data: str, ignore_duplicates: bool) -> None:
    """``data`` (COPY text, one line a row) into ``table``: straight in, or when duplicates are
    skipped through a temporary table of the session (emptied after use and at every commit) and
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` in the rows' order."""
    if not ignore_duplicates:
        _copy_expert(connection, f"COPY {table} ({names}) FROM STDIN", data)
        return
    stage = f"_stage_{zlib.crc32(f'{table}({names})'.encode()):08x}"
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT 0 AS _n, {names} FROM {table} WITH NO DATA"
    )
    _copy_expert(connection, f"COPY {stage} FROM STDIN", data)
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ORDER BY _n ON CONFLICT DO NOTHING"
    )
    connection.exec_driver_sql(f"DELETE FROM {stage}")


def _copy_expert(connection: Connection, statement: str, data: str) -> None:
    """psycopg2 refuses COPY in green mode (the wait callback that lets other greenthreads run while
    it waits): the COPY runs without it, holding this thread as SQLite's writes do (tens of ms for
    a job's chunk); no other greenthread runs meanwhile, so none sees the callback away."""
    from psycopg2 import extensions

    cursor = connection.connection.driver_connection.cursor()
    callback = extensions.get_wait_callback()
    extensions.set_wait_callback(None)
    try:
        cursor.copy_expert(statement, io.StringIO(data))
    except connection.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy wraps what its statements raise
        raise exc_module.DBAPIError.instance(statement, None, exc, connection.dialect.loaded_dbapi.Error) from exc
    finally:
        extensions.set_wait_callback(callback)
        cursor.close()


def _copy_data(values: list[list], numbered: bool) -> str | None:
    """The rows of column-wise ``values`` in COPY's text format (tab between fields, ``\\N`` for
    NULL, backslash escapes), each first numbered if asked, or None if a value is of a type it is
    not written for here (the rows then go as ``VALUES``)."""
    columns = [_copy_column(column) for column in values]
    if any(None in column for column in columns):
        return None
    if numbered:
        columns.insert(0, [str(n) for n in range(len(columns[0]))])
    return "".join("\t".join(row) + "\n" for row in zip(*columns, strict=True))


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_column(values: list) -> list:
    """A column's values in COPY's text format (None for a value of a type not written for here):
    columns of text (and NULLs) or of integers, the usual ones, converted in a few passes over the
    column; the others a distinct value at a time."""
    kinds = set(map(type, values))
    if kinds <= {str, type(None)}:
        texts = [value for value in values if value is not None] if type(None) in kinds else values
        if _COPY_SPECIAL.search("".join(texts)):
            return [_copy_text(value) for value in values]
        return ["\\N" if value is None else value for value in values] if type(None) in kinds else values
    if kinds == {int}:
        return list(map(str, values))
    return _bound(_copy_text, values)


def _copy_text(value: Any) -> str | None:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float | Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return None


_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # a positional parameter, by DBAPI paramstyle


def _bound(processor: Any, values: list) -> list:
    """``values`` as the driver takes them: ``processor`` (a column type's bind conversion, COPY's text, or None)
    applied once per distinct value (of one type: ``1`` and ``True`` are equal, not the same JSON)."""
    if processor is None:
        return values
    converted: dict = {}
    out = []
    for value in values:
        key = (type(value), value)
        try:
            out.append(converted[key])
        except KeyError:
            out.append(converted.setdefault(key, processor(value)))
        except TypeError:  # unhashable (a JSON column's dict): converted each time
            out.append(processor(value))
    return out
