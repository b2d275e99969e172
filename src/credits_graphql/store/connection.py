"""A unit of work's connection to the database."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import CursorResult, Dialect, Executable, Select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from credits_graphql.store.point_reads import PointReader


class StoreConnection:
    """A unit of work's connection, checked out of the pool at its first statement that the point reader does not
    serve (store/point_reads.py): a read that only needs point reads takes none."""

    def __init__(self, engine: AsyncEngine, point_reader: PointReader | None) -> None:
        self._engine = engine
        self._point_reader = point_reader
        self.opened: AsyncConnection | None = None

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def open(self) -> AsyncConnection:
        if self.opened is None:
            self.opened = await self._engine.connect()
        return self.opened

    async def execute(self, statement: Executable, parameters: Any = None, *,
                      execution_options: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        connection = self.opened or await self.open()
        return await connection.execute(statement, parameters, execution_options=execution_options)

    async def point_read(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of an index lookup of a few rows, which sees every commit made before it."""
        if self._point_reader is not None and (
                rows := await self._point_reader.rows(statement, parameters, self.open)) is not None:
            return rows
        if self.opened is not None and self.opened.invalidated:
            # The reader gave up a connection that failed. A new Connection, not the invalidated one reconnected:
            # SQLAlchemy applies the engine's isolation level (AUTOCOMMIT for reads on PostgreSQL) to a Connection
            # only when it is created.
            failed, self.opened = self.opened, None
            with contextlib.suppress(Exception):
                await failed.close()
        return (await self.execute(statement, parameters)).all()

    async def point_read_one(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Any | None:
        """The row of a point read of at most one row, or None."""
        rows = await self.point_read(statement, parameters)
        return rows[0] if rows else None
