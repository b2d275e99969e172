"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:56:39.900534
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('organizations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations'))
    )
    op.create_table('accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('balance_micros', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('balance_micros >= 0', name=op.f('ck_accounts_balance_not_negative')),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recharge_status', sa.String(length=10), nullable=False),
    sa.Column('recharge_amount_micros', sa.BigInteger(), nullable=True),
    sa.Column('recharge_trigger_micros', sa.BigInteger(), nullable=True),
    sa.Column('recharge_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recharge_failures', sa.Integer(), nullable=False),
    sa.Column('payment_token', sa.String(length=255), nullable=True),
    sa.Column('payment_brand', sa.String(length=40), nullable=True),
    sa.Column('payment_last4', sa.String(length=4), nullable=True),
    sa.Column('payment_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_accounts_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index('ix_accounts_org_id_id', ['org_id', 'id'], unique=False)

    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_api_keys_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_org_id'), ['org_id'], unique=False)

    op.create_table('ledger_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('balance_after_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('service', sa.String(length=40), nullable=True),
    sa.Column('minutes', sa.Integer(), nullable=True),
    sa.Column('reference', sa.String(length=255), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_ledger_entries_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries'))
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_entries_account_id_id', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_ledger_entries_account_id_kind_id', ['account_id', 'kind', 'id'], unique=False)
        batch_op.create_index('uq_ledger_entries_account_id_idempotency_key', ['account_id', 'idempotency_key'], unique=True)

    op.create_table('recharge_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('failure_reason', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('triggered_by_entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_recharge_attempts_account_id_accounts')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_entries.id'], name=op.f('fk_recharge_attempts_transaction_id_ledger_entries')),
    sa.ForeignKeyConstraint(['triggered_by_entry_id'], ['ledger_entries.id'], name=op.f('fk_recharge_attempts_triggered_by_entry_id_ledger_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recharge_attempts'))
    )
    with op.batch_alter_table('recharge_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_recharge_attempts_account_id_id', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_recharge_attempts_due', ['not_before'], unique=False, sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
        batch_op.create_index('ix_recharge_attempts_triggered_by_entry_id', ['triggered_by_entry_id'], unique=False)
        batch_op.create_index('uq_recharge_attempts_one_pending', ['account_id'], unique=True, sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))



def downgrade() -> None:
    with op.batch_alter_table('recharge_attempts', schema=None) as batch_op:
        batch_op.drop_index('uq_recharge_attempts_one_pending', sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
        batch_op.drop_index('ix_recharge_attempts_triggered_by_entry_id')
        batch_op.drop_index('ix_recharge_attempts_due', sqlite_where=sa.text("status = 'PENDING'"), postgresql_where=sa.text("status = 'PENDING'"))
        batch_op.drop_index('ix_recharge_attempts_account_id_id')

    op.drop_table('recharge_attempts')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('uq_ledger_entries_account_id_idempotency_key')
        batch_op.drop_index('ix_ledger_entries_account_id_kind_id')
        batch_op.drop_index('ix_ledger_entries_account_id_id')

    op.drop_table('ledger_entries')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_org_id'))

    op.drop_table('api_keys')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index('ix_accounts_org_id_id')

    op.drop_table('accounts')
    op.drop_table('organizations')
