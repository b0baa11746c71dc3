"""the pending requests in a queue table of their own; no index on status_requests.state

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:00:00

Applying a request changed its ``state``, which two indexes named (``(job_id, state)`` and the
pending requests' partial index): every applied request was a new row version with an entry in
each of the table's seven indexes. The applier's queue is now ``status_pending`` (a row per
pending request: added by the service as it records requests, removed by triggers when a
request's state changes or it is deleted), a job's refused rows are found through a partial
index on ``error_code``, and PostgreSQL updates an applied request in place (HOT; fillfactor 50).

The triggers' statements are written out here as they were made at this revision
(``services._status.models.PENDING_QUEUE`` holds the current ones, for ``create_all``). A later
migration that rebuilds ``status_requests`` on SQLite (``batch_alter_table``) drops its triggers
with it and must make them again.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

POSTGRESQL = [
    """CREATE OR REPLACE FUNCTION status_pending_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM status_pending WHERE seq = ANY(ARRAY(SELECT seq FROM settled WHERE state <> 'pending'));
    RETURN NULL;
END $$""",
    """CREATE OR REPLACE FUNCTION status_pending_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM status_pending WHERE seq = ANY(ARRAY(SELECT seq FROM dropped));
    RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER status_pending_settled AFTER UPDATE ON status_requests"
    " REFERENCING NEW TABLE AS settled FOR EACH STATEMENT EXECUTE FUNCTION status_pending_settled()",
    "CREATE OR REPLACE TRIGGER status_pending_dropped AFTER DELETE ON status_requests"
    " REFERENCING OLD TABLE AS dropped FOR EACH STATEMENT EXECUTE FUNCTION status_pending_dropped()",
    "ALTER TABLE status_requests SET (fillfactor = 50)",
]
SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS status_pending_settled AFTER UPDATE OF state ON status_requests"
    " WHEN NEW.state <> 'pending' BEGIN DELETE FROM status_pending WHERE seq = NEW.seq; END",
    "CREATE TRIGGER IF NOT EXISTS status_pending_dropped AFTER DELETE ON status_requests BEGIN"
    " DELETE FROM status_pending WHERE seq = OLD.seq; END",
]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('status_pending',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('student_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index('ix_status_pending_job_id', 'status_pending', ['job_id'], unique=False)
    op.execute(
        "INSERT INTO status_pending (seq, student_id, job_id)"
        " SELECT seq, student_id, job_id FROM status_requests WHERE state = 'pending'"
    )
    op.drop_index('ix_status_requests_pending_seq', table_name='status_requests')
    op.drop_index('ix_status_requests_job_state', table_name='status_requests')
    op.create_index(
        'ix_status_requests_job_errors',
        'status_requests',
        ['job_id', 'row_no'],
        unique=False,
        sqlite_where=sa.text('error_code IS NOT NULL'),
        postgresql_where=sa.text('error_code IS NOT NULL'),
    )
    for statement in POSTGRESQL if op.get_bind().dialect.name == 'postgresql' else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    for trigger in ('status_pending_settled', 'status_pending_dropped'):
        if op.get_bind().dialect.name == 'postgresql':
            op.execute(f'DROP TRIGGER IF EXISTS {trigger} ON status_requests')
            op.execute(f'DROP FUNCTION IF EXISTS {trigger}()')
        else:
            op.execute(f'DROP TRIGGER IF EXISTS {trigger}')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE status_requests RESET (fillfactor)')
    op.drop_index('ix_status_requests_job_errors', table_name='status_requests')
    op.create_index('ix_status_requests_job_state', 'status_requests', ['job_id', 'state'], unique=False)
    op.create_index(
        'ix_status_requests_pending_seq',
        'status_requests',
        ['seq'],
        unique=False,
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index('ix_status_pending_job_id', table_name='status_pending')
    op.drop_table('status_pending')
