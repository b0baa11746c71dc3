"""The one place that builds database engines and sessions.

Services get a worker session from :class:`Database` (nameko-sqlalchemy's
provider, configured for SQLite and PostgreSQL alike). Background loops use
``Database.engine`` / ``Database.Session`` directly.

Rule for every transaction in this code base: it is short and never spans
network I/O (RPC, publishing). Under eventlet, database drivers block the
whole process, so a transaction that yielded while holding a lock could be
waited on by another greenthread of the same process forever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nameko_sqlalchemy import Database as _Database
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 15_000


def build_engine(uri: str, **options: Any) -> Engine:
    """An engine with the settings this project relies on for either database."""
    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    if url.get_driver_name() == "psycopg2":  # executemany of UPDATEs in pages, not one round trip a row
        options.setdefault("executemany_mode", "values_plus_batch")
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    return create_engine(url, **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, safe with WAL
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database(_Database):
    """nameko-sqlalchemy's ``Database`` with :func:`build_engine`'s engine.

    Config: ``DB_URIS: {"<service>:<BaseName>": uri}``.
    """

    def setup(self) -> None:
        super().setup()
        self.engine.dispose()
        self.engine = build_engine(self.db_uri, **self.engine_options)
        self.Session.configure(bind=self.engine)


def db_uri(config: dict, service_name: str, base: type) -> str:
    return config["DB_URIS"][f"{service_name}:{base.__name__}"]


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` of many rows in one executemany:
    a redelivered or repeated row is skipped instead of failing the batch."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    session.execute(insert(table).on_conflict_do_nothing(), rows)
