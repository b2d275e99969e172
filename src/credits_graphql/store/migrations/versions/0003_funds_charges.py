"""Manual funds charges written before the gateway is called

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    op.create_table('funds_charges',
    sa.Column('id', _Id, autoincrement=True, nullable=False),
    sa.Column('account_id', _Id, nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('payment_token', sa.String(length=255), nullable=False),
    sa.Column('gateway_key', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('failure_reason', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('transaction_id', _Id, nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_funds_charges_account_id_accounts')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_entries.id'],
                            name=op.f('fk_funds_charges_transaction_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_funds_charges'))
    )
    with op.batch_alter_table('funds_charges', schema=None) as batch_op:
        batch_op.create_index('ix_funds_charges_account_id_id', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_funds_charges_pending', ['created_at'], unique=False,
                              sqlite_where=_PENDING, postgresql_where=_PENDING)
        batch_op.create_index('uq_funds_charges_one_pending', ['account_id', 'idempotency_key'], unique=True,
                              sqlite_where=_PENDING, postgresql_where=_PENDING)


def downgrade() -> None:
    with op.batch_alter_table('funds_charges', schema=None) as batch_op:
        batch_op.drop_index('uq_funds_charges_one_pending', sqlite_where=_PENDING, postgresql_where=_PENDING)
        batch_op.drop_index('ix_funds_charges_pending', sqlite_where=_PENDING, postgresql_where=_PENDING)
        batch_op.drop_index('ix_funds_charges_account_id_id')
    op.drop_table('funds_charges')
