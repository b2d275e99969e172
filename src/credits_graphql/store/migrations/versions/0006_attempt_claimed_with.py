"""The card and settings a recharge attempt was first claimed under, so its decline counts against those only

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:00:00

One nullable column: older code runs on this schema unchanged (it neither reads nor writes the column), so it may
be applied while the older release runs. An attempt that an older worker claimed has none, and is given the account's
terms when a newer worker takes it over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch copy: on SQLite a table copy would break the attempts' foreign keys.
    op.add_column('recharge_attempts', sa.Column('claimed_with', sa.String(length=32), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and (bind.dialect.server_version_info or (0,)) < (3, 35):
        with op.batch_alter_table('recharge_attempts', schema=None) as batch_op:
            batch_op.drop_column('claimed_with')
        return
    op.drop_column('recharge_attempts', 'claimed_with')
