"""The schema. Money columns are BIGINT micro-units (6 decimals); timestamps are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)

from credits_graphql.domain.recharge import CANCELLED, MAX_FAILURE_REASON

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both PostgreSQL and SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value.tzinfo is not UTC:  # the service's own clock gives UTC: ~2 us less per value, 2 per entry
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


organizations = Table(
    "organizations", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("role", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    Column("expires_at", UTCDateTime()),
)

# Append-only: migration 0002 adds triggers that refuse UPDATE and DELETE on both databases.
audit_events = Table(
    "audit_events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("organizations.id"), nullable=False),
    Column("api_key_id", Id, ForeignKey("api_keys.id"), nullable=False),
    Column("operation", String(40), nullable=False),
    Column("account_id", Id),  # as the caller named it: it may be unknown, so no foreign key
    Column("input_summary", Text(), nullable=False),
    Column("outcome", String(12), nullable=False),
    Column("error_codes", String(255), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Index("ix_audit_events_org_id_id", "org_id", "id"),
)

accounts = Table(
    "accounts", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", Id, ForeignKey("organizations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(10), nullable=False),
    Column("balance_micros", BigInteger(), nullable=False),
    CheckConstraint("balance_micros >= 0", name="balance_not_negative"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("recharge_status", String(10), nullable=False),
    Column("recharge_amount_micros", BigInteger()),
    Column("recharge_trigger_micros", BigInteger()),
    Column("recharge_updated_at", UTCDateTime()),
    Column("recharge_failures", Integer(), nullable=False),
    Column("payment_token", String(255)),
    Column("payment_brand", String(40)),
    Column("payment_last4", String(4)),
    Column("payment_updated_at", UTCDateTime()),
    # Entries per kind, updated with the balance: totalCount without counting a long history.
    Column("funds_added_entries", BigInteger(), nullable=False, server_default=text("0")),
    Column("auto_recharge_entries", BigInteger(), nullable=False, server_default=text("0")),
    Column("usage_entries", BigInteger(), nullable=False, server_default=text("0")),
    Index("ix_accounts_org_id_id", "org_id", "id"),
)

# Append-only: migration 0007 adds triggers that refuse UPDATE and DELETE on both databases.
ledger_entries = Table(
    "ledger_entries", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("amount_micros", BigInteger(), nullable=False),
    Column("balance_after_micros", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("service", String(40)),
    Column("minutes", Integer()),
    Column("reference", String(255)),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Index("ix_ledger_entries_account_id_id", "account_id", "id"),
    Index("ix_ledger_entries_account_id_kind_id", "account_id", "kind", "id"),
    Index("uq_ledger_entries_account_id_idempotency_key", "account_id", "idempotency_key", unique=True),
)

# Charges cancelled on a lookup (domain.recharge.CANCELLED): queries write the predicate as is, for the partial indexes.
CANCELLED_ATTEMPT = f"status = 'FAILED' AND failure_reason LIKE '{CANCELLED}%'"
CANCELLED_FUNDS_CHARGE = f"status = 'DECLINED' AND failure_reason LIKE '{CANCELLED}%'"

recharge_attempts = Table(
    "recharge_attempts", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("status", String(10), nullable=False),
    Column("amount_micros", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("failure_reason", String(MAX_FAILURE_REASON)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("lease_expires_at", UTCDateTime()),
    Column("settled_at", UTCDateTime()),
    Column("transaction_id", Id, ForeignKey("ledger_entries.id")),
    Column("triggered_by_entry_id", Id, ForeignKey("ledger_entries.id")),
    Column("claimed_with", String(32)),  # Account.recharge_terms when first claimed
    Index("ix_recharge_attempts_account_id_id", "account_id", "id"),
    Index("ix_recharge_attempts_triggered_by_entry_id", "triggered_by_entry_id"),
    # The database itself refuses a second PENDING attempt for an account.
    Index("uq_recharge_attempts_one_pending", "account_id", unique=True,
          sqlite_where=text("status = 'PENDING'"), postgresql_where=text("status = 'PENDING'")),
    Index("ix_recharge_attempts_due", "not_before",
          sqlite_where=text("status = 'PENDING'"), postgresql_where=text("status = 'PENDING'")),
    # The attempts cancelled on a lookup, which the worker looks up again for a while (service/reconciliation.py).
    Index("ix_recharge_attempts_cancelled", "settled_at", sqlite_where=text(CANCELLED_ATTEMPT),
          postgresql_where=text(CANCELLED_ATTEMPT)),
)

# addFunds writes its charge here and commits before calling the gateway; a worker settles what a crash left PENDING.
funds_charges = Table(
    "funds_charges", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("amount_micros", BigInteger(), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_token", String(255), nullable=False),
    Column("gateway_key", String(320), nullable=False),
    Column("status", String(10), nullable=False),
    Column("failure_reason", String(MAX_FAILURE_REASON)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("lease_expires_at", UTCDateTime()),
    Column("settled_at", UTCDateTime()),
    Column("transaction_id", Id, ForeignKey("ledger_entries.id")),
    Column("api_key_id", Id),  # the key that asked for it (none before migration 0008)
    Index("ix_funds_charges_account_id_id", "account_id", "id"),
    # One charge in flight per idempotency key: a concurrent duplicate reuses it instead of adding another.
    Index("uq_funds_charges_one_pending", "account_id", "idempotency_key", unique=True,
          sqlite_where=text("status = 'PENDING'"), postgresql_where=text("status = 'PENDING'")),
    Index("ix_funds_charges_pending", "created_at",
          sqlite_where=text("status = 'PENDING'"), postgresql_where=text("status = 'PENDING'")),
    Index("ix_funds_charges_cancelled", "settled_at", sqlite_where=text(CANCELLED_FUNDS_CHARGE),
          postgresql_where=text(CANCELLED_FUNDS_CHARGE)),
)
