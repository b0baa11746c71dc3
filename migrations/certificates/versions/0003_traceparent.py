"""traceparent

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 20:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# the W3C traceparent of the span that wrote a row whose work goes on later (tracing on): nullable
TABLES = ('outbox',)


def upgrade() -> None:
    """Upgrade schema."""
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('traceparent', sa.String(length=55), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('traceparent')
