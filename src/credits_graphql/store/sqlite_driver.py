"""SQLAlchemy's aiosqlite adapter, with one thread hop per statement instead of four, and none for what can wait.

aiosqlite runs each sqlite3 call on the connection's own thread and hands the result back to the event
loop; SQLAlchemy's adapter makes four such calls per statement (open a cursor, execute, fetch, close).
Each hop costs more than the SQL (a usage transaction is ~40 us of SQLite). Here a statement is executed
and fetched in one call on that thread. What needs no answer waits to travel with the next statement: a BEGIN,
and a write whose result the caller does not read (a statement executed with UNREAD_OPTION; an error it raises
surfaces at that next statement or at COMMIT, and fails the transaction as it would have). A read
transaction's ROLLBACK is queued without waiting for it. A write transaction's BEGIN IMMEDIATE first takes its
place in the writers' line of the database file (store/sqlite_writer_lock.py), and its COMMIT or ROLLBACK
leaves it, in the same hops.

Every statement runs on the connection's thread, where SQLite may wait for a lock. (A read unit of work's point
reads do not come here: store/point_reads.py runs them on the loop's thread, on a connection that never waits.)"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

from credits_graphql.store.sqlite_writer_lock import WriterLock

_BEGINS = frozenset({"BEGIN", "BEGIN IMMEDIATE"})
_WRITE_BEGIN = "BEGIN IMMEDIATE"

T = TypeVar("T")
Description = tuple[tuple[Any, ...], ...] | None
Pending = list[tuple[str, Any]]
"""Statements and their parameters, waiting to travel with the next statement or the COMMIT."""


def _send(connection: sqlite3.Connection, writer_lock: WriterLock | None, pending: Pending) -> None:
    for statement, parameters in pending:
        if statement == _WRITE_BEGIN and writer_lock is not None:
            writer_lock.acquire()
            try:
                connection.execute(statement)
            except BaseException:
                writer_lock.release()  # no transaction began; one that did is left at ROLLBACK
                raise
        else:
            connection.execute(statement, parameters)


def _run(connection: sqlite3.Connection, writer_lock: WriterLock | None, pending: Pending, operation: str,
         parameters: Any, many: bool) -> tuple[Description, list[Any], int, int | None]:
    """On the connection's thread: what was waiting, then the statement and all its rows."""
    _send(connection, writer_lock, pending)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_each(connection: sqlite3.Connection, writer_lock: WriterLock | None, pending: Pending, operation: str,
              parameter_sets: Sequence[Any]) -> list[list[Any]]:
    """On the connection's thread: what was waiting, then the statement once per parameter set, with its rows."""
    _send(connection, writer_lock, pending)
    cursor = connection.cursor()
    try:
        return [cursor.execute(operation, parameters).fetchall() for parameters in parameter_sets]
    finally:
        cursor.close()


async def _nothing() -> None:
    pass


class OneHopCursor:
    """The DB-API cursor SQLAlchemy drives, holding the rows fetched in the statement's hop."""

    server_side = False
    arraysize = 1

    def __init__(self, connection: OneHopConnection) -> None:
        self._adapt_connection = connection
        self.description: Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque[Any] = deque()
        self._unread = False

    def unread(self) -> None:
        """The next statement's result will not be read: it waits to travel with the one after it."""
        self._unread = True

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._execute(operation, parameters or (), many=False)

    def executemany(self, operation: str, seq_of_parameters: Any) -> None:
        self._execute(operation, seq_of_parameters, many=True)

    def _execute(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection = self._adapt_connection
        if self._unread and not many:
            self._unread = False
            connection.defer(operation, parameters)
            self.description, self.rowcount = None, -1
            await_(_nothing())  # SQLAlchemy requires an async driver to await in each execute
            return
        self.description, rows, self.rowcount, self.lastrowid = connection.on_thread(
            _run, connection.writer_lock, connection.take_pending(), operation, parameters, many)
        self._rows = deque(rows)

    async def _async_soft_close(self) -> None:
        """Nothing is open on the database side: the rows were fetched with the statement."""

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any) -> None:
        pass

    def __iter__(self) -> Any:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


def _finish(connection: sqlite3.Connection, writer_lock: WriterLock | None, pending: Pending,
            commit: bool) -> None:
    """On the connection's thread: what was waiting and COMMIT, or ROLLBACK; then the writers' line is free."""
    try:
        if commit:
            try:
                _send(connection, writer_lock, pending)
            except BaseException:
                if connection.in_transaction:
                    connection.rollback()
                raise
            connection.commit()
        else:
            connection.rollback()
    finally:
        if writer_lock is not None:
            writer_lock.release()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("in_transaction", "pending", "writer_lock", "writing")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any, writer_lock: WriterLock | None) -> None:
        super().__init__(dbapi, connection)  # an aiosqlite.Connection
        self.pending: Pending = []
        self.in_transaction = False  # a statement ran since the last commit or rollback
        self.writing = False  # ... and the transaction is a write (BEGIN IMMEDIATE)
        self.writer_lock = writer_lock

    def begin(self, statement: str) -> None:
        """`statement` (BEGIN or BEGIN IMMEDIATE) travels with the transaction's first statement."""
        self.pending.append((statement, ()))

    def take_pending(self) -> Pending:
        """What waits to travel with the statement about to run; the transaction is under way once it has."""
        pending, self.pending = self.pending, []
        if pending:
            self.in_transaction = True
            self.writing = self.writing or (_WRITE_BEGIN, ()) in pending
        return pending

    def defer(self, operation: str, parameters: Sequence[Any]) -> None:
        """A statement whose result is not read: it travels with the next statement or the COMMIT."""
        self.pending.append((operation, parameters))

    async def rows(self, operation: str, parameters: Sequence[Any]) -> list[Any]:
        """The statement's rows, with what was waiting: awaited straight from the event loop, not from SQLAlchemy's
        greenlet (store/transaction_statements.py). A driver error is raised as is."""
        [found] = await self.rows_each(operation, [parameters])
        return found

    async def rows_each(self, operation: str, parameter_sets: Sequence[Any]) -> list[list[Any]]:
        """The statement run once per parameter set, and each run's rows, in one trip to the thread; as `rows`."""
        inner = self._connection
        ran: list[list[Any]] = await inner._execute(
            _run_each, inner._conn, self.writer_lock, self.take_pending(), operation, parameter_sets)
        return ran

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        # A BEGIN that never travelled opened nothing; a transaction that ran nothing has nothing to end.
        # (The connection is in autocommit mode: isolation_level None, we issue BEGIN ourselves.)
        # A COMMIT takes the writes still waiting with it; a ROLLBACK drops them.
        ran, writing, pending = self.in_transaction, self.writing, self.pending if commit else []
        self.pending, self.in_transaction, self.writing = [], False, False
        if pending and all(statement in _BEGINS for statement, _ in pending):
            pending = []  # a BEGIN with nothing after it opens and commits nothing
        inner = self._connection
        if not inner._connection or not (ran or pending):
            return
        if not commit and not writing:
            # A read's rollback has nothing to lose: it is queued on the connection's thread without a round
            # trip, and whatever the connection runs next runs there, after it.
            inner._tx.put_nowait((None, partial(_finish, inner._conn, None, [], False)))
            return
        self.on_thread(_finish, self.writer_lock, pending, commit)

    def on_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(sqlite3 connection, *args)` on the connection's thread, waited for."""
        inner = self._connection
        try:
            result: T = await_(inner._execute(function, inner._conn, *args))
        except Exception as error:
            self._handle_exception(error)
        return result

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.writer_lock is not None:
                self.writer_lock.close()

    # An invalidated connection (a request cancelled while its statement ran on the thread, say) is terminated,
    # not closed: its writers' line goes too, once the thread has closed the database, and not before (a
    # COMMIT or ROLLBACK still on its way there leaves the line itself).
    async def _terminate_graceful_close(self) -> None:
        await super()._terminate_graceful_close()
        if self.writer_lock is not None:
            self.writer_lock.close()

    def _terminate_force_close(self) -> None:
        inner, lock = self._connection, self.writer_lock

        def close_database_then_line() -> None:
            if inner._connection is not None:
                inner._connection.close()
                inner._connection = None
            if lock is not None:
                lock.close()

        inner._tx.put_nowait((None, close_database_then_line))
        super()._terminate_force_close()

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            return self._ss_cursor_cls(self)
        return OneHopCursor(self)


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *args: Any, **kwargs: Any) -> OneHopConnection:
        database = str(args[0] if args else kwargs["database"])
        timeout = float(kwargs.get("timeout", 5.0))
        adapted = super().connect(*args, **kwargs)
        # No file beside an in-memory database or a URI to put the line in; those wait in the busy handler.
        no_file = database == ":memory:" or database.startswith("file:")
        return OneHopConnection(self, adapted._connection, None if no_file else WriterLock(database, timeout))


def one_hop_dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
