"""Shared body of each service's Alembic ``env.py``.

The database URL comes from ``-x db_uri=...``, else the ``sqlalchemy.url``
option set by ``tools.migrate``, else ``config.yaml``'s ``DB_URIS``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from services.infra.config import load_config
from services.infra.db import build_engine


def run(metadata: MetaData, uri_key: str) -> None:
    url = (
        context.get_x_argument(as_dictionary=True).get("db_uri")
        or context.config.get_main_option("sqlalchemy.url")
        or load_config()["DB_URIS"][uri_key]
    )
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = build_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def drop_sent_outbox_rows() -> None:
    """Outbox rows are deleted once published: the ones kept as sent go, and with them the
    ``published_at`` column and its index (every row left is waiting)."""
    from alembic import op

    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_published_at")
        batch_op.drop_column("published_at")


def restore_outbox_published_at() -> None:
    import sqlalchemy as sa
    from alembic import op

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_outbox_published_at", ["published_at"], unique=False)


def outbox_payload_compression(method: str) -> None:
    """The outbox's payload compressed with ``method`` on PostgreSQL (``lz4`` where the server is
    built with it, else left as it is; ``pglz``, the default, back). Rows already stored keep theirs;
    SQLite stores text as it is."""
    from alembic import op

    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression'"
        f" AND '{method}' = ANY(enumvals)) THEN"
        f" ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION {method}; END IF; END $$"
    )
