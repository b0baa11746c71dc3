"""attachments: a mail carries any number of files (a certificate's PDF and its signed credential)

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
    """Upgrade schema: each mail's one attachment moves to the new table."""
    op.create_table(
        'notification_attachments',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('notification_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('filename', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=100), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('notification_attachments', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_notification_attachments_notification_id'), ['notification_id'], unique=False
        )
    op.execute(
        "INSERT INTO notification_attachments (notification_id, position, filename, content_type, data) "
        "SELECT id, 0, attachment_name, CASE WHEN lower(attachment_name) LIKE '%.pdf' "
        "THEN 'application/pdf' ELSE 'application/octet-stream' END, attachment "
        "FROM notifications WHERE attachment IS NOT NULL AND attachment_name IS NOT NULL"
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('attachment')
        batch_op.drop_column('attachment_name')


def downgrade() -> None:
    """Downgrade schema: the first attachment of each mail goes back to its row."""
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attachment_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('attachment', sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE notifications SET "
        "attachment_name = (SELECT filename FROM notification_attachments a "
        "WHERE a.notification_id = notifications.id AND a.position = 0), "
        "attachment = (SELECT data FROM notification_attachments a "
        "WHERE a.notification_id = notifications.id AND a.position = 0)"
    )
    with op.batch_alter_table('notification_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_attachments_notification_id'))
    op.drop_table('notification_attachments')
