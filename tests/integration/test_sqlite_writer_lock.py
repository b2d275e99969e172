"""The writers' line of a SQLite database file (`<database>-writer`): held from a write transaction's BEGIN
IMMEDIATE to its COMMIT or ROLLBACK, never by reads, freed by the kernel when its process dies, and given
up on after the busy timeout with SQLite's own error."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.store.engine import WRITE_OPTION
from credits_graphql.store.sqlite_writer_lock import WriterLock
from tests.integration.conftest import line_is_free

HOLDER = """
import asyncio, sys
from sqlalchemy import text
from credits_graphql.store.engine import WRITE_OPTION, create_engine

async def main() -> None:
    engine = create_engine(sys.argv[1])
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('killed')"))
        print("holding", flush=True)
        sys.stdin.readline()  # until killed

asyncio.run(main())
"""


async def rows(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(text("SELECT v FROM t ORDER BY id"))).scalars())


@pytest.mark.parametrize("end", ["commit", "rollback"])
async def test_a_write_transaction_holds_the_line_until_it_ends(engine: AsyncEngine, database: Path,
                                                                end: str) -> None:
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert not line_is_free(database)
        await (connection.commit() if end == "commit" else connection.rollback())
        assert line_is_free(database)
    assert await rows(engine) == (["a"] if end == "commit" else [])


async def test_a_failed_statement_in_a_write_transaction_frees_the_line(engine: AsyncEngine,
                                                                         database: Path) -> None:
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        await connection.begin()
        with pytest.raises(Exception, match="no such table"):
            await connection.execute(text("INSERT INTO missing (v) VALUES ('a')"))
    assert line_is_free(database)


async def test_reads_do_not_take_the_line(engine: AsyncEngine, database: Path) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
        assert line_is_free(database)


async def test_a_writer_killed_in_its_transaction_leaves_the_line_free_and_nothing_written(
        engine: AsyncEngine, database: Path) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, f"sqlite+aiosqlite:///{database}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"holding"
        assert not line_is_free(database)
        holder.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(holder.wait(), timeout=30) == -signal.SIGKILL
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    assert line_is_free(database)
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('after')"))
        await connection.commit()
    assert await rows(engine) == ["after"]


def test_waiting_past_the_busy_timeout_fails_as_sqlite_does(database: Path) -> None:
    holder, waiter = WriterLock(str(database), timeout=1), WriterLock(str(database), timeout=0.05)
    try:
        holder.acquire()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            waiter.acquire()
        assert not waiter.held
        holder.release()
        waiter.acquire()
        assert waiter.held
    finally:
        holder.close()
        waiter.close()
