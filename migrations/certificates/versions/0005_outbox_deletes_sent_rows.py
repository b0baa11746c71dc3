"""outbox rows deleted once published

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 11:00:00

"""
from typing import Sequence, Union

from migrations.common import drop_sent_outbox_rows, restore_outbox_published_at


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    drop_sent_outbox_rows()


def downgrade() -> None:
    """Downgrade schema."""
    restore_outbox_published_at()
