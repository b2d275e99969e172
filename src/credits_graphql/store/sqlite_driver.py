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

A point read in a read transaction (a statement executed with INLINE_OPTION: the API key of every request, an
account by id, its pending recharge) takes no hop: it runs on the event loop's thread with SQLite's busy timeout
at 0, so it never waits in SQLite's busy handler for a lock. In WAL mode a reader takes no lock that a writer
holds; when SQLite still answers busy (another connection recovering the WAL, or closing the database last), the
statement goes to the connection's thread and waits there. (SQLite's WAL read path still retries on its own for a
moment when it races a checkpoint, and a read that finds the WAL index in need of recovery, after a crash, runs
the recovery: both are rare and short.) What it reads is the few pages of an index lookup, from SQLite's cache or
the OS's. The end of a transaction that ran only such reads lets go of its snapshot on the loop's thread too.
Everything else, every write included, runs on the connection's thread."""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
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
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

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


def _set_busy_timeout(connection: sqlite3.Connection, milliseconds: int) -> None:
    connection.execute(f"PRAGMA busy_timeout={milliseconds}")


def _run_waiting(connection: sqlite3.Connection, busy_timeout_ms: int, operation: str, parameters: Any
                 ) -> tuple[Description, list[Any], int, int | None]:
    """On the connection's thread: a point read that found the database busy on the loop's thread."""
    _set_busy_timeout(connection, busy_timeout_ms)
    try:
        return _run(connection, None, [], operation, parameters, False)
    finally:
        _set_busy_timeout(connection, 0)


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
        self._inline = False

    def unread(self) -> None:
        """The next statement's result will not be read: it waits to travel with the one after it."""
        self._unread = True

    def inline(self) -> None:
        """The next statement is a point read: in a read transaction it runs on the loop's thread."""
        self._inline = True

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._execute(operation, parameters or (), many=False)

    def executemany(self, operation: str, seq_of_parameters: Any) -> None:
        self._execute(operation, seq_of_parameters, many=True)

    def _execute(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection = self._adapt_connection
        if self._unread and not many:
            self._unread = False
            connection.pending.append((operation, parameters))
            self.description, self.rowcount = None, -1
            await_(_nothing())  # SQLAlchemy requires an async driver to await in each execute
            return
        inline, self._inline = self._inline, False
        if inline and not many and connection.may_run_inline():
            self._execute_inline(operation, parameters)
            await_(_nothing())
            return
        pending, connection.pending = connection.pending, []
        if pending:
            connection.in_transaction = True
            connection.writing = connection.writing or (_WRITE_BEGIN, ()) in pending
        connection.wait_when_busy(pending)
        connection.only_point_reads = False
        self.description, rows, self.rowcount, self.lastrowid = connection.on_thread(
            _run, connection.writer_lock, pending, operation, parameters, many)
        self._rows = deque(rows)

    def _execute_inline(self, operation: str, parameters: Any) -> None:
        connection = self._adapt_connection
        inner = connection._connection
        database: sqlite3.Connection = inner._conn
        try:
            if connection.busy_waits:
                _set_busy_timeout(database, 0)
                connection.busy_waits = False
            pending, connection.pending = connection.pending, []  # at most a read's BEGIN, which takes no lock
            _send(database, None, pending)
            connection.in_transaction = connection.in_transaction or bool(pending)
            try:
                self.description, rows, self.rowcount, self.lastrowid = _run(
                    database, None, [], operation, parameters, False)
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF not in _BUSY:  # SQLITE_BUSY_RECOVERY, ... are extended codes
                    raise
                connection.only_point_reads = False
                self.description, rows, self.rowcount, self.lastrowid = connection.on_thread(
                    _run_waiting, connection.busy_timeout_ms, operation, parameters)
        except Exception as error:
            connection._handle_exception(error)
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
    __slots__ = ("busy_timeout_ms", "busy_waits", "in_transaction", "only_point_reads", "pending", "queued",
                 "writer_lock", "writing")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any, writer_lock: WriterLock | None, busy_timeout_ms: int) -> None:
        super().__init__(dbapi, connection)  # an aiosqlite.Connection
        self.pending: Pending = []
        self.in_transaction = False  # a statement ran since the last commit or rollback
        self.writing = False  # ... and the transaction is a write (BEGIN IMMEDIATE)
        self.only_point_reads = True  # ... and nothing of it ran on the connection's thread
        self.queued = False  # a call went to the connection's thread unawaited: the loop's thread must wait
        self.writer_lock = writer_lock
        self.busy_timeout_ms = busy_timeout_ms
        self.busy_waits = True  # SQLite's busy timeout is busy_timeout_ms (the thread's), not 0 (the loop's)

    def may_run_inline(self) -> bool:
        """In a read transaction, with nothing on its way to the connection's thread, and nothing waiting to be
        sent but a read's BEGIN (not a BEGIN IMMEDIATE, nor an unread write)."""
        return (not self.writing and not self.queued
                and all(statement == "BEGIN" for statement, _ in self.pending))

    def wait_when_busy(self, pending: Pending) -> None:
        """On the connection's thread SQLite waits for a lock, up to its busy timeout: set it back first."""
        if not self.busy_waits:
            pending.insert(0, (f"PRAGMA busy_timeout={self.busy_timeout_ms}", ()))
            self.busy_waits = True

    def begin(self, statement: str) -> None:
        """`statement` (BEGIN or BEGIN IMMEDIATE) travels with the transaction's first statement."""
        self.pending.append((statement, ()))

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        # A BEGIN that never travelled opened nothing; a transaction that ran nothing has nothing to end.
        # (The connection is in autocommit mode: isolation_level None, we issue BEGIN ourselves.)
        # A COMMIT takes the writes still waiting with it; a ROLLBACK drops them.
        ran, writing, pending = self.in_transaction, self.writing, self.pending if commit else []
        only_point_reads = self.only_point_reads
        self.pending, self.in_transaction, self.writing, self.only_point_reads = [], False, False, True
        if pending and all(statement in _BEGINS for statement, _ in pending):
            pending = []  # a BEGIN with nothing after it opens and commits nothing
        inner = self._connection
        if not inner._connection or not (ran or pending):
            return
        if only_point_reads and not pending:
            # It only read, and ending it lets go of its snapshot, which waits on nothing.
            try:
                if commit:
                    inner._conn.commit()
                else:
                    inner._conn.rollback()
            except Exception as error:
                self._handle_exception(error)
            return
        if not commit and not writing:
            # A read's rollback has nothing to lose: it is queued on the connection's thread without a round
            # trip, and whatever the connection runs next runs there, after it.
            inner._tx.put_nowait((None, partial(_finish, inner._conn, None, [], False)))
            self.queued = True
            return
        if commit:
            self.wait_when_busy(pending)  # sent before the COMMIT's writes; a ROLLBACK waits on nothing
        self.on_thread(_finish, self.writer_lock, pending, commit)

    def on_thread(self, function: Callable[..., T], *args: Any) -> T:
        """`function(sqlite3 connection, *args)` on the connection's thread, waited for.

        Until it has run the connection stays `queued`: a wait that ends early (a cancelled request) leaves
        it on its way to the thread, and the loop's thread must not use the connection meanwhile."""
        inner = self._connection
        self.queued = True
        try:
            result: T = await_(inner._execute(function, inner._conn, *args))
        except Exception as error:
            self.queued = False  # it ran, and failed
            self._handle_exception(error)
        self.queued = False  # the thread runs its calls in order: anything queued before has run too
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
        # The connection's thread opens it; the loop's thread runs its point reads (never both at once).
        adapted = super().connect(*args, **{**kwargs, "check_same_thread": False})
        # No file beside an in-memory database or a URI to put the line in; those wait in the busy handler.
        no_file = database == ":memory:" or database.startswith("file:")
        return OneHopConnection(self, adapted._connection, None if no_file else WriterLock(database, timeout),
                                round(timeout * 1000))


def one_hop_dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
