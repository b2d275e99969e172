"""The migrated schema is the schema the code declares (no drift), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from credits_graphql.store.engine import create_engine
from credits_graphql.store.migrate import MIGRATIONS, upgrade
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
