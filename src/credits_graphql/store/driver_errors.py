"""Failures of statements run on the driver outside SQLAlchemy's pipeline (store/point_reads.py,
store/transaction_statements.py), handled as SQLAlchemy handles a failure of its own statements."""

from __future__ import annotations

import contextlib
from typing import Any, NoReturn

from sqlalchemy import Dialect
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import Pool, PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn


def dbapi_error_of(adapter: Any, error: Exception) -> Exception:
    """The DB-API error SQLAlchemy's adapter of the driver (`adapter`) makes of a driver's error; any other error
    as it is."""
    try:
        adapter._handle_exception(error)  # raises
    except Exception as translated:
        return translated
    return error  # pragma: no cover - _handle_exception always raises


def is_stale_statement(dbapi_error: BaseException) -> bool:
    """asyncpg: what a statement or type cached before a schema change (an ALTER TABLE by a `migrate` elsewhere,
    say) raises; SQLAlchemy's asyncpg dialect then has every connection prepare its statements anew, and so does
    the driver path. (The store retries the use case on InvalidCachedStatementError: store/unit_of_work.py.)"""
    return isinstance(dbapi_error, (AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError,
                                    AsyncAdapt_asyncpg_dbapi.InternalServerError))


def is_disconnect(dialect: Dialect, dbapi_error: Exception, adapter: Any) -> bool:
    return isinstance(dbapi_error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(dbapi_error, adapter, None)


def disconnected(dialect: Dialect, adapter: Any, error: BaseException) -> bool:
    """Whether a driver's error means the server or the network is gone."""
    return isinstance(error, Exception) and is_disconnect(dialect, dbapi_error_of(adapter, error), adapter)


async def invalidate(connection: AsyncConnection, error: BaseException, *, disconnect: bool) -> None:
    """The connection is replaced. After a disconnect every pooled connection older than it is too, at its next
    checkout: the server restarted or the network failed, so they may be dead as well (as SQLAlchemy does)."""
    if disconnect:
        with contextlib.suppress(Exception):
            sync = connection.sync_connection
            assert sync is not None
            sync.engine.pool._invalidate(sync.connection, error, _checkin=False)
    with contextlib.suppress(Exception):
        await connection.invalidate(error)


async def invalidate_pooled(pool: Pool, pooled: PoolProxiedConnection, error: BaseException, *,
                            disconnect: bool) -> None:
    """`invalidate` for a connection checked out of the pool without a SQLAlchemy Connection."""
    with contextlib.suppress(Exception):
        if disconnect:
            pool._invalidate(pooled, error, _checkin=False)
        await greenlet_spawn(pooled.invalidate, error)  # closing an asyncpg connection awaits


async def raise_as_sqlalchemy_does(connection: AsyncConnection, adapter: Any, sql: str, parameters: list[Any],
                                   error: BaseException) -> NoReturn:
    """A DB-API error in sqlalchemy.exc's class, the connection (and the pool, after a disconnect) invalidated
    when the error means it is gone; a cancellation leaves what the connection did unknown, so it is invalidated;
    any other error is raised as it is."""
    if not isinstance(error, Exception):
        await invalidate(connection, error, disconnect=False)
        raise error
    dbapi_error = dbapi_error_of(adapter, error)
    dialect = connection.dialect
    if not isinstance(dbapi_error, dialect.loaded_dbapi.Error):
        raise dbapi_error
    if is_stale_statement(dbapi_error):
        dialect._invalidate_schema_cache()  # type: ignore[attr-defined]  # as SQLAlchemy's asyncpg dialect does
    gone = is_disconnect(dialect, dbapi_error, adapter)
    if gone:
        await invalidate(connection, dbapi_error, disconnect=True)
    raise DBAPIError.instance(sql, parameters, dbapi_error, dialect.loaded_dbapi.Error, connection_invalidated=gone,
                              dialect=dialect) from error
