"""Point reads outside SQLAlchemy's execution pipeline, on SQLite.

Every request reads its API key, and most an account by id and its pending recharge: index lookups of one row
that SQLite answers in a few microseconds. Through SQLAlchemy's async pipeline each cost far more (a pool checkout
and return, a greenlet switch, the compiled-cache lookup, the result's construction): about half of a balance
read's CPU. Here each such statement is compiled once for the engine's dialect and run on a sqlite3 connection
of the process's own, on the event loop's thread, its rows processed by the columns' own types, so that a row
reads as it does through SQLAlchemy.

That connection only reads (query_only) and never waits: its busy timeout is 0. Each statement is a transaction of
its own (autocommit), so it sees every commit made before it, in any process, and holds no snapshot after it. When
SQLite answers busy, or fails in any way, the reader answers None and the caller reads through SQLAlchemy instead,
which waits for the database on a connection's thread or raises the error the store translates."""

from __future__ import annotations

import os
import sqlite3
from collections import namedtuple
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Dialect, Select

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class CompiledRead:
    """A SELECT compiled once for a dialect: its SQL, its parameters in order, and its rows' processing."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        if compiled.positiontup is None or compiled.post_compile_params:
            raise ValueError("a point read binds each parameter once, in a positional paramstyle (no expanding IN)")
        self._names = list(compiled.positiontup)
        self._constants = {name: bind.effective_value for name in self._names  # the values bound in the statement
                           if not (bind := compiled.binds[name]).required}
        self._bind = [(i, processor) for i, name in enumerate(self._names) if (processor := compiled.binds[
            name].type.dialect_impl(dialect).bind_processor(dialect)) is not None]
        columns = list(statement.selected_columns)
        self._row: Any = namedtuple("_Row", [column.key for column in columns])  # type: ignore[misc]
        self._result = [(i, processor) for i, column in enumerate(columns) if (processor := column.type.dialect_impl(
            dialect).result_processor(dialect, None)) is not None]

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        constants = self._constants
        parameters = [values[name] if name in values else constants[name] for name in self._names]
        for i, process in self._bind:
            parameters[i] = process(parameters[i])
        return parameters

    def row(self, values: tuple[Any, ...]) -> Any:
        """Attribute access by column name, as a SQLAlchemy Row's."""
        if self._result:
            processed = list(values)
            for i, process in self._result:
                processed[i] = process(processed[i])
            return self._row._make(processed)
        return self._row._make(values)


class SqlitePointReader:
    """The process's connection for point reads, used on the event loop's thread only, opened at the first."""

    def __init__(self, database: str, dialect: Dialect) -> None:
        self._database = database
        self._dialect = dialect
        self._compiled: dict[Select[Any], CompiledRead] = {}
        self._connection: sqlite3.Connection | None = None
        self._pid = 0

    def rows(self, statement: Select[Any], values: Mapping[str, Any]) -> list[Any] | None:
        """The statement's rows, or None when they could not be read here without waiting."""
        read = self._compiled.get(statement) or self._compile(statement)
        try:
            connection = self._connection if self._connection and self._pid == os.getpid() else self._open()
            found = connection.execute(read.sql, read.parameters(values)).fetchall()
        except sqlite3.Error as error:
            if not isinstance(error, sqlite3.OperationalError) or error.sqlite_errorcode & 0xFF not in _BUSY:
                self.close()  # the next read opens a new connection
            return None
        return [read.row(row) for row in found]

    def close(self) -> None:
        connection, self._connection, self._pid = self._connection, None, 0
        if connection is not None:
            connection.close()

    def _compile(self, statement: Select[Any]) -> CompiledRead:
        read = self._compiled[statement] = CompiledRead(statement, self._dialect)
        return read

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


def sqlite_point_reader(database: str | None, dialect: Dialect) -> SqlitePointReader | None:
    """None for a database with no file of its own (in memory): another connection would see another database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return SqlitePointReader(database, dialect)

