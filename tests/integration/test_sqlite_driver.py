"""The SQLite driver: one trip to the connection's thread per statement, transactions that still behave as
SQLite's own (a folded BEGIN IMMEDIATE holds the write lock; a rollback leaves nothing), and a fixed pool."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from credits_graphql.store.engine import (
    SQLITE_POOL_SIZE,
    UNREAD_OPTION,
    WRITE_OPTION,
)
from tests.integration.conftest import line_is_free


@asynccontextmanager
async def writer(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose transactions are writes (BEGIN IMMEDIATE)."""
    async with engine.connect() as connection:
        await connection.execution_options(**{WRITE_OPTION: True})
        yield connection


async def test_a_write_transaction_takes_one_hop_per_statement_and_one_to_commit(
        engine: AsyncEngine, hops: list[str]) -> None:
    async with writer(engine) as connection:
        hops.clear()
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        rows = (await connection.execute(text("SELECT v FROM t"))).all()
        await connection.commit()
    assert rows == [("a",)]
    assert hops == ["_run", "_run", "_finish"]


async def test_a_read_transaction_ends_without_a_round_trip_and_before_the_next_statement(
        engine: AsyncEngine, database: Path, hops: list[str]) -> None:
    other = sqlite3.connect(database, isolation_level=None)
    try:
        async with engine.connect() as connection:
            hops.clear()
            await connection.begin()
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
            await connection.rollback()
            assert hops == ["_run"]  # the ROLLBACK went without waiting for it
            other.execute("INSERT INTO t (v) VALUES ('later')")
            # A new transaction on the same connection: its BEGIN runs after that ROLLBACK, and sees the insert.
            await connection.begin()
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
            await connection.rollback()
    finally:
        other.close()


INSERT = text("INSERT INTO t (id, v) VALUES (:id, :v)")
UNREAD = {UNREAD_OPTION: True}


def committed_rows(database: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(database)) as other:
        return other.execute("SELECT id, v FROM t ORDER BY id").fetchall()


async def test_an_unread_write_travels_with_the_next_statement_and_the_last_with_the_commit(
        engine: AsyncEngine, database: Path, hops: list[str]) -> None:
    async with writer(engine) as connection:
        hops.clear()
        await connection.begin()
        await connection.execute(INSERT, {"id": 1, "v": "a"}, execution_options=UNREAD)
        assert hops == []
        assert (await connection.execute(text("SELECT v FROM t"))).all() == [("a",)]
        await connection.execute(INSERT, {"id": 2, "v": "b"}, execution_options=UNREAD)
        assert committed_rows(database) == []
        await connection.commit()
    assert hops == ["_run", "_finish"]
    assert committed_rows(database) == [(1, "a"), (2, "b")]


async def test_an_unread_write_that_fails_fails_its_transaction_at_commit_and_frees_the_writers_line(
        engine: AsyncEngine, database: Path) -> None:
    async with writer(engine) as connection:
        await connection.begin()
        await connection.execute(INSERT, {"id": 1, "v": "kept?"})
        await connection.execute(INSERT, {"id": 1, "v": "same id"}, execution_options=UNREAD)
        with pytest.raises(Exception, match="UNIQUE constraint failed"):
            await connection.commit()
    assert committed_rows(database) == []  # the whole transaction, not only the failed write
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # neither SQLite's write lock nor the writers' line is held
        other.execute("ROLLBACK")


async def test_a_rollback_drops_unread_writes_without_a_hop(
        engine: AsyncEngine, database: Path, hops: list[str]) -> None:
    async with writer(engine) as connection:
        hops.clear()
        await connection.begin()
        await connection.execute(INSERT, {"id": 1, "v": "dropped"}, execution_options=UNREAD)
        await connection.rollback()
    assert hops == []
    assert committed_rows(database) == []


async def test_a_transaction_that_ran_nothing_costs_no_hop(engine: AsyncEngine, hops: list[str]) -> None:
    async with engine.connect() as connection:
        hops.clear()
        await connection.begin()
        await connection.rollback()
    assert hops == []


async def test_a_folded_begin_immediate_holds_the_write_lock_from_the_first_statement(
        engine: AsyncEngine, database: Path) -> None:
    other = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        async with writer(engine) as connection:
            await connection.begin()
            await connection.execute(text("SELECT count(*) FROM t"))  # a read, yet the write lock is held
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await connection.rollback()
        other.execute("BEGIN IMMEDIATE")  # released
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_rollback_leaves_nothing_and_errors_surface_as_sqlalchemy_errors(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        await connection.execute(text("INSERT INTO t (v) VALUES ('gone')"))
        await connection.rollback()
        with pytest.raises(Exception, match="no such table"):
            await connection.execute(text("SELECT * FROM missing"))
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def test_concurrent_use_keeps_a_fixed_set_of_connections(engine: AsyncEngine) -> None:
    """Each connection is a thread; under load the pool neither grows nor opens and closes connections."""
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda dbapi_connection, _: opened.append(dbapi_connection))

    async def read() -> int:
        async with engine.connect() as connection:
            value = (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one()
            await asyncio.sleep(0)  # hold the connection across a turn of the loop, as a request does
            return int(value)

    for _ in range(3):
        assert await asyncio.gather(*(read() for _ in range(32))) == [0] * 32
    assert 1 <= len(opened) <= SQLITE_POOL_SIZE


def writers_line_is_free(database: Path) -> bool:
    """Neither SQLite's write lock nor the writers' line is held."""
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as other:
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        other.execute("ROLLBACK")
    return line_is_free(database)


async def test_a_write_cancelled_on_the_connections_thread_leaves_the_lock_and_the_writers_line(
        engine: AsyncEngine, database: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def block() -> int:
        started.set()
        release.wait(timeout=30)
        return 1

    async def write() -> None:
        async with writer(engine) as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            raw._conn.create_function("block", 0, block)
            await connection.begin()
            await connection.execute(INSERT, {"id": 1, "v": "never"})  # BEGIN IMMEDIATE: lock and line taken
            await connection.execute(text("SELECT block()"))
            await connection.commit()

    task = asyncio.create_task(write())
    await asyncio.to_thread(started.wait, 30)
    assert not writers_line_is_free(database)
    task.cancel()  # as when the client leaves: SQLAlchemy invalidates the connection and terminates it
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writers_line_is_free(database)
    assert committed_rows(database) == []
    async with writer(engine) as connection, connection.begin():  # the next writer gets in at once
        await connection.execute(INSERT, {"id": 2, "v": "next"})
    assert committed_rows(database) == [(2, "next")]

