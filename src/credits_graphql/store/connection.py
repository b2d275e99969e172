"""A unit of work's connection to the database."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult, Dialect, Executable, Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.util import greenlet_spawn

from credits_graphql.store.driver_errors import disconnected, invalidate, invalidate_pooled
from credits_graphql.store.engine import UNREAD_OPTION
from credits_graphql.store.point_reads import PointReader
from credits_graphql.store.transaction_statements import TransactionStatements

_UNREAD = {UNREAD_OPTION: True}


class StoreConnection:
    """A unit of work's connection, checked out of the pool at its first statement that the point reader does not
    serve (store/point_reads.py): a read that only needs point reads takes none on SQLite, and on PostgreSQL one
    without a SQLAlchemy Connection, which `open()` builds around it only if a statement needs one. A write
    transaction runs its hot statements (`point_read`, `write`, `write_returning`) on the driver
    (store/transaction_statements.py)."""

    def __init__(self, engine: AsyncEngine, point_reader: PointReader | None,
                 transaction: TransactionStatements | None = None) -> None:
        self._engine = engine
        self._point_reader = point_reader
        self._transaction = transaction
        self.opened: AsyncConnection | None = None
        self._pooled: PoolProxiedConnection | None = None
        """Checked out for point reads, while `opened` is None."""

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def open(self) -> AsyncConnection:
        if self.opened is None:
            pooled, self._pooled = self._pooled, None
            if pooled is not None and pooled.is_valid:
                self.opened = AsyncConnection(self._engine, await self._adopt(pooled))
            else:
                self.opened = await self._engine.connect()
        return self.opened

    async def pooled(self) -> PoolProxiedConnection | None:
        """The pooled connection the point reader runs on, checked out at its first read, or None when it is no
        longer valid. Half the cost of a SQLAlchemy Connection's checkout and return on PostgreSQL, where every
        request reads its API key."""
        if self.opened is not None:
            sync = self.opened.sync_connection
            return None if sync is None or sync.invalidated else sync.connection
        if self._pooled is None:
            self._pooled = await greenlet_spawn(self._engine.sync_engine.raw_connection)
        return self._pooled if self._pooled.is_valid else None

    async def drop_pooled(self, error: BaseException) -> None:
        """After a point read on `pooled()`'s connection failed, leaving its state unknown (a query cut short, the
        server gone): the pool replaces it, and after a disconnect every older one; the next statement takes a
        new one."""
        if self.opened is not None:
            sync = self.opened.sync_connection
            adapter = sync.connection.dbapi_connection if sync is not None and not sync.invalidated else None
            await invalidate(self.opened, error, disconnect=disconnected(self.dialect, adapter, error))
        elif (pooled := self._pooled) is not None:
            self._pooled = None
            await invalidate_pooled(self._engine.sync_engine.pool, pooled, error,
                                    disconnect=disconnected(self.dialect, pooled.dbapi_connection, error))

    async def close(self) -> None:
        """Returns the connection to the pool. Closing rolls back a transaction still open (not one committed); on
        a dead connection that fails too, and the database has rolled back already."""
        pooled, self._pooled = self._pooled, None
        with contextlib.suppress(Exception):
            if self.opened is not None:
                await self.opened.close()
            elif pooled is not None and pooled.is_valid:
                await greenlet_spawn(pooled.close)

    async def _adopt(self, pooled: PoolProxiedConnection) -> Connection:
        """A SQLAlchemy Connection on a connection the point reads checked out: it applies the engine's options
        (AUTOCOMMIT, for reads on PostgreSQL) as a checkout through the engine does."""
        try:
            return await greenlet_spawn(Connection, self._engine.sync_engine, pooled)
        except BaseException:
            with contextlib.suppress(Exception):
                await greenlet_spawn(pooled.close)
            raise

    async def execute(self, statement: Executable, parameters: Any = None, *,
                      execution_options: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        connection = self.opened or await self.open()
        return await connection.execute(statement, parameters, execution_options=execution_options)

    async def point_read(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of an index lookup of a few rows, which sees every commit made before it (and in a write
        transaction, the transaction's own writes)."""
        if self._transaction is not None:
            return await self._transaction.rows(self.opened or await self.open(), statement, parameters)
        if self._point_reader is not None and (
                rows := await self._point_reader.rows(statement, parameters, self)) is not None:
            return rows
        if self.opened is not None and self.opened.invalidated:
            # The reader gave up a connection that failed. A new Connection, not the invalidated one reconnected:
            # SQLAlchemy applies the engine's isolation level (AUTOCOMMIT for reads on PostgreSQL) to a Connection
            # only when it is created.
            failed, self.opened = self.opened, None
            with contextlib.suppress(Exception):
                await failed.close()
        return (await self.execute(statement, parameters)).all()

    async def point_read_each(self, statement: Select[Any],
                              value_sets: Sequence[Mapping[str, Any]]) -> Sequence[Sequence[Any]]:
        """`point_read` once per value set (all with the same names), each set's rows, in order: on SQLite, in a
        write transaction, all in one trip to the connection's thread."""
        if self._transaction is not None and value_sets:
            found = await self._transaction.rows_each(self.opened or await self.open(), statement, value_sets)
            if found is not None:
                return found
        return [await self.point_read(statement, values) for values in value_sets]

    async def point_read_one(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Any | None:
        """The row of a point read of at most one row, or None."""
        rows = await self.point_read(statement, parameters)
        return rows[0] if rows else None

    async def write_returning(self, statement: UpdateBase, values: Mapping[str, Any]) -> Sequence[Any]:
        """The rows an INSERT or UPDATE ... RETURNING returns. `statement` is built once (a module constant)."""
        if self._transaction is not None:
            return await self._transaction.rows(self.opened or await self.open(), statement, values)
        return (await self.execute(statement, values)).all()

    async def write_each_returning(self, statement: UpdateBase,
                                   value_sets: Sequence[Mapping[str, Any]]) -> Sequence[Sequence[Any]]:
        """The rows an INSERT ... RETURNING returns for each value set (all with the same names), in order.
        `statement` is built once (a module constant), with `returning(..., sort_by_parameter_order=True)`."""
        rows: Sequence[Sequence[Any]] | None = None
        if self._transaction is not None:
            rows = await self._transaction.rows_each(self.opened or await self.open(), statement, value_sets)
        return rows if rows is not None else [[row] for row in await self.execute(statement, value_sets)]

    async def write_many(self, statement: UpdateBase, value_sets: Sequence[Mapping[str, Any]]) -> None:
        """`write` once per value set (all with the same names): on SQLite each travels with the next statement,
        on PostgreSQL all go in one round trip."""
        if self._transaction is not None:
            await self._transaction.send_many(self.opened or await self.open(), statement, value_sets)
        else:
            await self.execute(statement, value_sets, execution_options=_UNREAD)

    async def write(self, statement: UpdateBase, values: Mapping[str, Any]) -> None:
        """An INSERT or UPDATE whose result (row count included) is not read: on SQLite it travels with the next
        statement or the COMMIT, where an error it raises surfaces. `statement` is built once (a module constant)."""
        if self._transaction is not None:
            await self._transaction.send(self.opened or await self.open(), statement, values)
        else:
            await self.execute(statement, values, execution_options=_UNREAD)
