"""A write transaction's hot statements on the driver's connection, outside SQLAlchemy's pipeline.

A usage report locks its account, looks up its idempotency key, appends its entry and saves the account: each
statement costs ~100 us of CPU through SQLAlchemy's async pipeline, far more than the database takes. These run
compiled once (store/compiled.py) on the unit of work's own connection, in its transaction, which SQLAlchemy began
and commits or rolls back as usual: they see the transaction's writes and the transaction sees theirs.

SQLite: through the driver's connection (store/sqlite_driver.py), one trip to its thread per statement whose rows
are read, with what waits to travel with it (the BEGIN IMMEDIATE, writes not read); a write not read waits for the
next statement or the COMMIT, as through SQLAlchemy. PostgreSQL: straight through asyncpg, after the BEGIN that
SQLAlchemy's adapter would send before its first statement.

An error is raised as SQLAlchemy raises it (store/driver_errors.py), so that the store translates it as any other
(store/unit_of_work.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from credits_graphql.store.compiled import CompiledStatements
from credits_graphql.store.driver_errors import raise_as_sqlalchemy_does
from credits_graphql.store.sqlite_driver import OneHopDBAPI


class TransactionStatements(Protocol):
    async def rows(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> list[Any]:
        """The rows of a SELECT, or of an INSERT/UPDATE ... RETURNING, run in `connection`'s transaction."""
        ...

    async def send(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> None:
        """An INSERT or UPDATE whose result is not read; an error it raises may surface at the next statement."""
        ...

    async def send_many(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> None:
        """`send` once per value set (all with the same names)."""
        ...

    async def rows_each(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> list[list[Any]] | None:
        """The rows of a SELECT, or of an INSERT ... RETURNING, run once per value set (all with the same names),
        in order; None where a statement per set is a round trip each (PostgreSQL: SQLAlchemy's executemany sends
        an INSERT's rows together)."""
        ...


class SqliteTransactionStatements(CompiledStatements):
    async def rows(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> list[Any]:
        compiled = self.compiled(statement, values)
        parameters = compiled.parameters(values)
        found = await _on_driver(connection, compiled.sql, parameters,
                                 lambda driver: driver.rows(compiled.sql, parameters))
        return [compiled.row(row) for row in found]

    async def send(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> None:
        compiled = self.compiled(statement, values)
        _driver(connection).defer(compiled.sql, compiled.parameters(values))

    async def send_many(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> None:
        for values in value_sets:
            await self.send(connection, statement, values)

    async def rows_each(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> list[list[Any]] | None:
        # SQLite runs a one-row INSERT, or an index lookup, in a few microseconds: one trip to the thread for all of
        # them costs less than SQLAlchemy's processing of a multi-row INSERT's parameters.
        compiled = self.compiled(statement, value_sets[0])
        parameter_sets = compiled.parameters_many(value_sets)
        found: list[list[Any]] = await _on_driver(connection, compiled.sql, parameter_sets,
                                                  lambda driver: driver.rows_each(compiled.sql, parameter_sets))
        return [[compiled.row(row) for row in rows] for rows in found]


class PostgresqlTransactionStatements(CompiledStatements):
    async def rows(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> list[Any]:
        compiled = self.compiled(statement, values)
        parameters = compiled.parameters(values)
        found = await self._run(connection, compiled.sql, parameters, lambda prepared: prepared.fetch(*parameters))
        return [compiled.row(tuple(row)) for row in found]

    async def send(self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]) -> None:
        await self.rows(connection, statement, values)

    async def send_many(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> None:
        if not value_sets:
            return
        compiled = self.compiled(statement, value_sets[0])
        parameter_sets = compiled.parameters_many(value_sets)
        # asyncpg sends every set's bind and execute, then one sync: one round trip.
        await self._run(connection, compiled.sql, parameter_sets, lambda prepared: prepared.executemany(parameter_sets))

    async def _run(self, connection: AsyncConnection, sql: str, parameters: list[Any],
                   run: Callable[[Any], Awaitable[Any]]) -> Any:
        """`run(prepared statement)` in the transaction, on SQLAlchemy's adapter of the asyncpg connection."""
        async def on_prepared(driver: Any) -> Any:
            async with driver._execute_mutex:
                if driver._transaction is None:
                    await driver._start_transaction()  # the BEGIN SQLAlchemy's adapter sends with its first statement
                # On the adapter's prepared statements, which SQLAlchemy re-prepares on every connection once one
                # of them met a statement made stale by a schema change (store/driver_errors.py).
                prepared, _ = await driver._prepare(sql, self.dialect._invalidate_schema_cache_asof)  # type: ignore[attr-defined]
                return await run(prepared)

        return await _on_driver(connection, sql, parameters, on_prepared)

    async def rows_each(self, connection: AsyncConnection, statement: Executable,
                        value_sets: Sequence[Mapping[str, Any]]) -> list[list[Any]] | None:
        return None  # a round trip per row here; SQLAlchemy's insertmanyvalues sends them together


async def _on_driver(connection: AsyncConnection, sql: str, parameters: list[Any],
                     run: Callable[[Any], Awaitable[Any]]) -> Any:
    """`run(the connection's driver adapter)`; an error it raises is raised as SQLAlchemy raises it."""
    driver = _driver(connection)
    try:
        return await run(driver)
    except BaseException as error:
        await raise_as_sqlalchemy_does(connection, driver, sql, parameters, error)


def _driver(connection: AsyncConnection) -> Any:
    """SQLAlchemy's DB-API adapter of the connection's driver (a checked-out, valid connection's)."""
    return connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]


def transaction_statements(engine: AsyncEngine) -> TransactionStatements | None:
    """None for a driver other than ours on SQLite or asyncpg on PostgreSQL: its statements go through SQLAlchemy."""
    dialect = engine.dialect
    if dialect.name == "sqlite" and isinstance(dialect.loaded_dbapi, OneHopDBAPI):
        return SqliteTransactionStatements(dialect)
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        return PostgresqlTransactionStatements(dialect)
    return None
