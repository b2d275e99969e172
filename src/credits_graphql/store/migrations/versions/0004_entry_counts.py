"""per-kind ledger entry counts on accounts, so totalCount does not count a long history

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COUNTERS = {"funds_added_entries": "FUNDS_ADDED", "auto_recharge_entries": "AUTO_RECHARGE",
            "usage_entries": "USAGE"}


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch copy: on SQLite a table copy would break the ledger's foreign keys.
    for column in COUNTERS:
        op.add_column('accounts', sa.Column(column, sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    for column, kind in COUNTERS.items():
        op.execute(f"UPDATE accounts SET {column} = (SELECT count(*) FROM ledger_entries "  # noqa: S608 (constants)
                   f"WHERE ledger_entries.account_id = accounts.id AND ledger_entries.kind = '{kind}')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and (bind.dialect.server_version_info or (0,)) < (3, 35):
        # No DROP COLUMN before SQLite 3.35: a batch copy of the table, which fails once ledger entries exist.
        with op.batch_alter_table('accounts', schema=None) as batch_op:
            for column in COUNTERS:
                batch_op.drop_column(column)
        return
    # A plain DROP COLUMN: on SQLite a table copy would break the ledger's foreign keys.
    for column in COUNTERS:
        op.drop_column('accounts', column)
