"""ids never reused: on SQLite, students.id is AUTOINCREMENT

Without it SQLite hands the id of the newest student, once deleted, to the next one, and
the status service (which keeps that id marked deleted) rejects the newcomer's changes.
PostgreSQL's sequence never reuses an id: nothing to do there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 18:50:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("students", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("students", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
