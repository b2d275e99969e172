"""Migrations: the migrated schema is the schema the code declares (no drift), two `migrate` at once, a
downgrade with data, and /readyz until the schema is migrated, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from credits_graphql.app import build_app
from credits_graphql.bootstrap import bootstrap
from credits_graphql.settings import Settings
from credits_graphql.store.engine import create_engine
from credits_graphql.store.migrate import MIGRATIONS, alembic_config, upgrade, upgrade_database
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


READY = {"status": "ok", "database": "reachable"}


async def _readyz(url: str, *, migrate_after_first: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """/readyz's status and body on an application built on the database at `url`; with `migrate_after_first`, asked
    again after `migrate`."""
    runtime = bootstrap(Settings(database_url=url))
    answers = []
    try:
        transport = httpx.ASGITransport(app=build_app(runtime, run_worker=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for migrate in (False, True) if migrate_after_first else (False,):
                if migrate:
                    await upgrade_database(url)
                response = await client.get("/readyz")
                answers.append((response.status_code, response.json()))
    finally:
        await runtime.close()
    return answers


async def test_readyz_answers_503_until_the_database_is_migrated(any_database_url: str) -> None:
    """A server started while the database was unreachable did not check its schema: the load balancer must not send
    it requests, all of which would fail, while the database is reachable but not migrated."""
    unmigrated, migrated = await _readyz(any_database_url, migrate_after_first=True)
    assert unmigrated == (503, {"status": "unavailable", "database": "not migrated", "detail": (
        "database schema is at revision none, this release needs 0008: run credits-graphql migrate")})
    assert migrated == (200, READY)


async def test_readyz_answers_200_on_a_schema_a_newer_release_migrated(any_database_url: str) -> None:
    await upgrade_database(any_database_url)
    engine = create_engine(any_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        await engine.dispose()
    assert await _readyz(any_database_url) == [(200, READY)]
