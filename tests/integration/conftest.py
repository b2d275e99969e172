"""Fixtures of the SQLite driver tests: a database file with one table, `t`, and an engine on it; and fresh,
unmigrated databases of both kinds for the migration tests."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.store.engine import create_engine
from tests.e2e.conftest import any_database_url, postgres_url, sqlite_url  # noqa: F401 (fixtures)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
async def engine(database: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield engine
    await engine.dispose()


def line_is_free(database: Path) -> bool:
    """No connection holds the writers' line of `database` (store/sqlite_writer_lock.py)."""
    fd = os.open(f"{database}-writer", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
