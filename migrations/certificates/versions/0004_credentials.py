"""signed credentials: each certificate's credential and status-list bit, the status lists, the published keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('credential', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('status_list', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('status_index', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(
            'uq_certificates_status_list_status_index', ['status_list', 'status_index']
        )
    op.create_table(
        'status_lists',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('next_index', sa.Integer(), nullable=False),
        sa.Column('credential', sa.Text(), nullable=False),
        sa.Column('published_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'signing_keys',
        sa.Column('thumbprint', sa.String(length=64), nullable=False),
        sa.Column('alg', sa.String(length=10), nullable=False),
        sa.Column('public_jwk', sa.Text(), nullable=False),
        sa.Column('first_used_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('thumbprint'),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('signing_keys')
    op.drop_table('status_lists')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_constraint('uq_certificates_status_list_status_index', type_='unique')
        batch_op.drop_column('status_index')
        batch_op.drop_column('status_list')
        batch_op.drop_column('credential')
        batch_op.drop_column('language')
