"""index on the correlation id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 21:00:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # the operations console looks requests up by correlation id
    op.create_index('ix_status_requests_correlation_id', 'status_requests', ['correlation_id'])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_status_requests_correlation_id', table_name='status_requests')
