"""outbox payloads compressed with lz4 on PostgreSQL

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 20:30:00

"""
from typing import Sequence, Union

from migrations.common import outbox_payload_compression


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    outbox_payload_compression("lz4")


def downgrade() -> None:
    """Downgrade schema."""
    outbox_payload_compression("pglz")
