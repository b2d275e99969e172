"""The async engine. SQLite is set up for concurrent use: WAL, a busy timeout, and write
transactions that take the write lock when they begin (BEGIN IMMEDIATE), so two writers never
deadlock upgrading read locks; PostgreSQL write transactions lock the account row instead."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from credits_graphql.store.sqlite_driver import OneHopConnection, one_hop_dbapi
from credits_graphql.store.sqlite_wal import switch_to_wal

WRITE_OPTION = "credits_write"
UNREAD_OPTION = "credits_unread"
"""For a write whose result (row count included) the caller does not read: on SQLite it is sent with the
transaction's next statement or its COMMIT, and an error it raises surfaces there (store/sqlite_driver.py)."""
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "credits_idle_since"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
SQLITE_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# Each SQLite connection is a thread of its own (aiosqlite), and SQLite runs one writer at a time. SQLAlchemy's
# default (5, plus 10 opened under load and closed when given back) kept opening connections and starting
# threads under load, and their GIL hand-offs cost more than the SQL: a fixed pool of 2 answered a balance
# read with ~25 % less CPU (half the system time) in bench/run.py's scenarios.
SQLITE_POOL_SIZE = 2


def create_engine(url: str, *, pool_size: int | None = None, max_overflow: int | None = None,
                  **kwargs: Any) -> AsyncEngine:
    """`pool_size`/`max_overflow` size the PostgreSQL pool (per process; SQLite's is SQLITE_POOL_SIZE)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, module=one_hop_dbapi(), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            pool_size=SQLITE_POOL_SIZE, max_overflow=0, **kwargs)
        _configure_sqlite(engine)
        return engine
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
    if max_overflow is not None:
        kwargs["max_overflow"] = max_overflow
    engine = create_async_engine(url, **kwargs)
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: AsyncEngine) -> None:
    """A pooled connection is checked before use when it may have gone: closed by the server (a restart, an idle
    timeout; seen at no cost) or idle in the pool for over PING_AFTER_IDLE_SECONDS (then pinged, one round
    trip). SQLAlchemy's pool_pre_ping pinged every checkout: a balance read made three round trips instead of
    two, and served a quarter fewer requests. A connection found dead under load, used within the last second, makes
    its read fail with ReadConnectionLost, which the use case runs again on a new connection (store.unit_of_work);
    the pool replaces every connection older than the failure."""

    @event.listens_for(engine.sync_engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        is_closed = getattr(dbapi_connection.driver_connection, "is_closed", None)  # asyncpg: free, no round trip
        if is_closed is not None and is_closed():
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as error:
                raise DisconnectionError("the connection did not answer a ping") from error


def _set_up_sqlite_connection(connection: sqlite3.Connection) -> None:
    """On the connection's thread, off the event loop: the switch to WAL may wait for another writer."""
    switch_to_wal(connection, SQLITE_BUSY_TIMEOUT_SECONDS)
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    # A reader that holds a snapshot (a sqlite3 shell left in a transaction) keeps checkpoints from restarting the
    # WAL, which then grows (300 MB in 30 s under load); once it can restart, the file is cut back to this size.
    connection.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT_BYTES}")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: OneHopConnection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        dbapi_connection.on_thread(_set_up_sqlite_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver, which sends it with the first statement: as a statement of its own through
        # SQLAlchemy's pipeline (exec_driver_sql), the BEGIN took a sixth of the first statement's execution.
        dbapi_connection: OneHopConnection = connection.connection.dbapi_connection  # type: ignore[assignment]
        dbapi_connection.begin("BEGIN IMMEDIATE" if write else "BEGIN")

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def on_execute(_connection: Connection, cursor: Any, _statement: str, _parameters: Any,
                   context: ExecutionContext | None, _executemany: bool) -> None:
        if context is not None and context.execution_options.get(UNREAD_OPTION):
            cursor.unread()

