"""The API key that asked for an addFunds charge, so that a worker crediting it in the request's stead records the
audit event in that key's name

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:30:00

One nullable column: older code runs on this schema unchanged (it neither reads nor writes the column), so it may
be applied while the older release runs. A charge written by older code has none, and a worker that credits it
records no event for it, as older workers did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch copy: on SQLite a table copy would break the charges' foreign keys.
    op.add_column('funds_charges', sa.Column('api_key_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                             nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and (bind.dialect.server_version_info or (0,)) < (3, 35):
        with op.batch_alter_table('funds_charges', schema=None) as batch_op:
            batch_op.drop_column('api_key_id')
        return
    op.drop_column('funds_charges', 'api_key_id')
