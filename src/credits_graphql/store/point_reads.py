"""Point reads outside SQLAlchemy's execution pipeline.

Every request reads its API key, and most an account by id and its pending recharge: index lookups of one row.
Each is compiled once for the engine's dialect (store/compiled.py) and run on the driver's connection. Only a read
unit of work's reads come here: a write's reads must see its own writes (store/transaction_statements.py).

SQLite: on a sqlite3 connection of the process's own, outside the pool, on the event loop's thread. It only reads
(query_only) and never waits: its busy timeout is 0. Each statement is a transaction of its own (autocommit), so it
sees every commit made before it, in any process, and holds no snapshot after it. In WAL mode a reader takes no lock
that a writer holds. (SQLite's WAL read path still retries on its own for a moment when it races a checkpoint, and
a read that finds the WAL index in need of recovery, after a crash, runs the recovery: both are rare and short.)
What it reads is the few pages of an index lookup, from SQLite's cache or the OS's. A read that needs nothing else
checks out no pooled connection at all.

PostgreSQL: on the unit of work's pooled connection (a read runs in autocommit, as through SQLAlchemy), straight
through asyncpg, which keeps each statement prepared on that connection. A read unit of work takes its connection
out of the pool without a SQLAlchemy Connection while it makes only point reads (store/connection.py).

When the database answers busy, or the read fails in any way, the reader answers None and the caller reads through
SQLAlchemy instead, which waits for the database (on SQLite, on a pooled connection's thread) or raises the error
the store translates; on PostgreSQL the failed connection is replaced first."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import Dialect, Select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from credits_graphql.store.compiled import CompiledStatements

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class PooledConnection(Protocol):
    """A unit of work's pooled connection (store/connection.py)."""

    async def pooled(self) -> PoolProxiedConnection | None:
        """Checked out at the first call; None when it is no longer valid."""
        ...

    async def drop_pooled(self, error: BaseException) -> None:
        """After a statement on it failed, leaving its state unknown."""
        ...


class PointReader(Protocol):
    async def rows(self, statement: Select[Any], values: Mapping[str, Any],
                   connection: PooledConnection) -> list[Any] | None:
        """The statement's rows, or None when they could not be read here: the caller reads through SQLAlchemy on
        the unit of work's pooled connection instead."""
        ...


class SqlitePointReader(CompiledStatements):
    """The process's connection for point reads, used on the event loop's thread only, opened at the first."""

    def __init__(self, database: str, dialect: Dialect) -> None:
        super().__init__(dialect)
        self._database = database
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    async def rows(self, statement: Select[Any], values: Mapping[str, Any],
                   connection: PooledConnection) -> list[Any] | None:
        read = self.compiled(statement, values)
        try:
            own = self._connection if self._connection and self._pid == os.getpid() else self._open()
            found = own.execute(read.sql, read.parameters(values)).fetchall()
        except sqlite3.Error as error:
            # (Python's own errors, a column that is not UTF-8 say, carry no SQLite error code.)
            if getattr(error, "sqlite_errorcode", 0) & 0xFF not in _BUSY:
                self.close()  # the next read opens a new connection
            return None
        return [read.row(row) for row in found]

    def close(self) -> None:
        connection, self._connection, self._pid = self._connection, None, 0
        if connection is not None:
            connection.close()

    def _open(self) -> sqlite3.Connection:
        # A connection opened before a fork (serve --workers) belongs to the parent: a child opens its own.
        connection = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA query_only=1")
        except BaseException:
            connection.close()
            raise
        self._connection, self._pid = connection, os.getpid()
        return connection


class PostgresqlPointReader(CompiledStatements):
    """On the unit of work's pooled connection, straight through asyncpg, which keeps the statement prepared on
    that connection. No transaction is open on it (a read unit of work runs none), so each read is one of its own."""

    async def rows(self, statement: Select[Any], values: Mapping[str, Any],
                   connection: PooledConnection) -> list[Any] | None:
        read = self.compiled(statement, values)
        pooled = await connection.pooled()
        if pooled is None:
            return None
        driver = pooled.driver_connection
        assert driver is not None
        try:
            found = await driver.fetch(read.sql, *read.parameters(values))
        except BaseException as error:
            # The connection's state is not known (a query cut short, the server gone): the pool replaces it (and
            # after a disconnect every older one), and the read runs again through SQLAlchemy, on a new one, which
            # raises what the store translates.
            await connection.drop_pooled(error)
            if isinstance(error, Exception):
                return None
            raise
        return [read.row(tuple(row)) for row in found]


def point_reader(engine: AsyncEngine) -> SqlitePointReader | PostgresqlPointReader | None:
    """None for an SQLite database with no file of its own (in memory): another connection would see another
    database."""
    if engine.dialect.name == "postgresql":
        return PostgresqlPointReader(engine.dialect)
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return SqlitePointReader(database, engine.dialect)
