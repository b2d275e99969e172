"""The migrated schema is the schema the code declares (no drift), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from credits_graphql.store.engine import create_engine
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
