"""Indexes of the charges cancelled on a lookup, which the worker looks up again for a while

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00

Only two indexes: older code runs on this schema unchanged, so it may be applied while the older release runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_CANCELLED_ATTEMPT = sa.text("status = 'FAILED' AND failure_reason LIKE 'cancelled: %'")
_CANCELLED_FUNDS_CHARGE = sa.text("status = 'DECLINED' AND failure_reason LIKE 'cancelled: %'")


def upgrade() -> None:
    op.create_index('ix_recharge_attempts_cancelled', 'recharge_attempts', ['settled_at'], unique=False,
                    sqlite_where=_CANCELLED_ATTEMPT, postgresql_where=_CANCELLED_ATTEMPT)
    op.create_index('ix_funds_charges_cancelled', 'funds_charges', ['settled_at'], unique=False,
                    sqlite_where=_CANCELLED_FUNDS_CHARGE, postgresql_where=_CANCELLED_FUNDS_CHARGE)


def downgrade() -> None:
    op.drop_index('ix_funds_charges_cancelled', 'funds_charges')
    op.drop_index('ix_recharge_attempts_cancelled', 'recharge_attempts')
