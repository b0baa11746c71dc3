"""on behalf of

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:12:31.518204

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# who the actor (an API key's name) acts for, recorded next to it: nullable, the rows before have none
TABLES = ('status_requests', 'status_history', 'status_jobs')


def upgrade() -> None:
    """Upgrade schema."""
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('on_behalf_of', sa.String(length=200), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('on_behalf_of')
