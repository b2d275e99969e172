"""Upgrading a database that holds data: from the first revision to the newest, existing accounts get the
entry counters that totalCount reads (0004) and existing keys stay usable."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from credits_graphql.store.engine import create_engine
from credits_graphql.store.migrate import alembic_config


def _upgrade(connection: Connection, url: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


ENTRY = ("INSERT INTO ledger_entries (account_id, kind, amount_micros, balance_after_micros, currency, "
         "occurred_at, created_at) VALUES (1, :kind, :amount, :after, 'SEK', :at, :at)")


async def test_existing_histories_are_counted_when_the_counters_arrive(any_database_url: str) -> None:
    url = any_database_url
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, url, "0001")
            await connection.execute(text("INSERT INTO organizations (name, created_at) VALUES ('o', '2026-01-01')"))
            await connection.execute(text(
                "INSERT INTO accounts (org_id, name, currency, status, balance_micros, created_at, recharge_status, "
                "recharge_failures) VALUES (1, 'a', 'SEK', 'ACTIVE', 97000000, '2026-01-01', 'DISABLED', 0)"))
            await connection.execute(text("INSERT INTO api_keys (org_id, role, key_hash, prefix, created_at) "
                                          "VALUES (1, 'ADMIN', 'digest', 'cgk_x', '2026-01-01')"))
            history = [("FUNDS_ADDED", 100_000_000), ("USAGE", -1_000_000), ("USAGE", -1_000_000),
                       ("AUTO_RECHARGE", 0), ("USAGE", -1_000_000)]
            balance = 0
            for kind, amount in history:
                balance += amount
                await connection.execute(text(ENTRY), {"kind": kind, "amount": amount, "after": balance,
                                                       "at": datetime(2026, 1, 1, tzinfo=UTC)})
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, url, "head")
            counts = (await connection.execute(text(
                "SELECT funds_added_entries, auto_recharge_entries, usage_entries FROM accounts"))).one()
            key = (await connection.execute(text("SELECT role, expires_at, revoked_at FROM api_keys"))).one()
            entries = (await connection.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
    finally:
        await engine.dispose()
    assert tuple(counts) == (1, 1, 3)
    assert tuple(key) == ("ADMIN", None, None)
    assert entries == len(history)
