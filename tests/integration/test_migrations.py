"""Migrations: the migrated schema is the schema the code declares (no drift), two `migrate` at once, and a
downgrade with data, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from credits_graphql.store.engine import create_engine
from credits_graphql.store.migrate import MIGRATIONS, alembic_config, upgrade
from credits_graphql.store.tables import metadata


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


async def test_the_migrated_schema_equals_the_models(database_url: str) -> None:
    engine = create_engine(database_url)  # `database_url` is migrated with `alembic upgrade head`
    try:
        async with engine.connect() as connection:
            drift = await connection.run_sync(_drift)
    finally:
        await engine.dispose()
    assert drift == []


async def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()


async def test_two_migrations_started_at_once_on_a_fresh_database_both_succeed(any_database_url: str) -> None:
    """Two `migrate` at once (two deploy steps, say): the second waits for the first, then finds nothing to do."""
    engines = [create_engine(any_database_url) for _ in range(2)]
    try:
        await asyncio.gather(*(upgrade(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert await _revision(any_database_url) == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _migrate_to(connection: Connection, url: str, revision: str, *, down: bool = False) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_the_entry_counters_can_be_downgraded_and_upgraded_again_with_ledger_entries(
        any_database_url: str) -> None:
    url = any_database_url
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to, url, "head")
            await connection.execute(text("INSERT INTO organizations (name, created_at) VALUES ('o', '2026-01-01')"))
            await connection.execute(text(
                "INSERT INTO accounts (org_id, name, currency, status, balance_micros, created_at, recharge_status, "
                "recharge_failures, funds_added_entries) "
                "VALUES (1, 'a', 'SEK', 'ACTIVE', 5000000, '2026-01-01', 'DISABLED', 0, 1)"))
            await connection.execute(text(
                "INSERT INTO ledger_entries (account_id, kind, amount_micros, balance_after_micros, currency, "
                "occurred_at, created_at) VALUES (1, 'FUNDS_ADDED', 5000000, 5000000, 'SEK', :at, :at)"),
                {"at": datetime(2026, 1, 1, tzinfo=UTC)})
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to, url, "0003", down=True)
            columns = await connection.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns("accounts")})
            assert "funds_added_entries" not in columns
            await connection.run_sync(_migrate_to, url, "head")
            counts = (await connection.execute(text(
                "SELECT balance_micros, funds_added_entries, usage_entries FROM accounts"))).one()
            entries = (await connection.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
    finally:
        await engine.dispose()
    assert tuple(counts) == (5_000_000, 1, 0)
    assert entries == 1
