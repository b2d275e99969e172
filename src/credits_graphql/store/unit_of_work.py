"""One database transaction with the repositories bound to it."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy import event, func, select
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.service.transient import ReadConnectionLost, StoreUnavailable, TransientConflict
from credits_graphql.service.unit_of_work import (
    AccountRepository,
    ApiKeyRepository,
    AuditEventRepository,
    FundsChargeRepository,
    LedgerRepository,
    OrganizationRepository,
    RechargeAttemptRepository,
)
from credits_graphql.store import engine as engine_settings
from credits_graphql.store.connection import StoreConnection
from credits_graphql.store.engine import WRITE_OPTION
from credits_graphql.store.point_reads import PointReader, SqlitePointReader, point_reader
from credits_graphql.store.repositories import (
    SqlAccountRepository,
    SqlApiKeyRepository,
    SqlAuditEventRepository,
    SqlFundsChargeRepository,
    SqlLedgerRepository,
    SqlOrganizationRepository,
    SqlRechargeAttemptRepository,
)
from credits_graphql.store.transaction_statements import TransactionStatements, transaction_statements


class SqlUnitOfWork:
    """On a Core connection: the repositories issue Core statements only, and an ORM session's
    bookkeeping would cost more than the SQL on PostgreSQL."""

    connection: StoreConnection
    accounts: AccountRepository
    ledger: LedgerRepository
    attempts: RechargeAttemptRepository
    funds_charges: FundsChargeRepository
    organizations: OrganizationRepository
    api_keys: ApiKeyRepository
    audit_events: AuditEventRepository
    committed: bool = False

    def __init__(self, engine: AsyncEngine, *, write: bool, writers: asyncio.Lock | None = None,
                 point_reader: PointReader | None = None, transaction: TransactionStatements | None = None) -> None:
        if write and not engine.get_execution_options().get(WRITE_OPTION):
            raise ValueError("a write unit of work runs on an engine with WRITE_OPTION set (SqlUnitOfWorkFactory's)")
        self._engine = engine
        self._write = write
        self._writers = writers if write else None
        # A write's reads see its own writes: its hot statements run in its transaction, not on the point reader.
        self._point_reader = None if write else point_reader
        self._transaction = transaction if write else None
        self._holding = False

    async def __aenter__(self) -> Self:
        if self._writers is not None:
            # The busy timeout bounds the wait in this process's line too: a line behind another program's write
            # lock would otherwise wait a busy timeout per writer ahead in it (k times 30 s).
            try:
                async with asyncio.timeout(engine_settings.SQLITE_BUSY_TIMEOUT_SECONDS):
                    await self._writers.acquire()
            except TimeoutError:
                raise StoreUnavailable("database busy (this process's writers waited past the busy timeout)") from None
            self._holding = True
        self.connection = StoreConnection(self._engine, self._point_reader, self._transaction)
        if self._write:
            try:
                connection = await self.connection.open()
                try:
                    await connection.begin()  # on SQLite: BEGIN IMMEDIATE (the engine's WRITE_OPTION), see store.engine
                except Exception:
                    await self.connection.close()
                    raise
            except Exception as error:
                self._release_writers()
                if (translated := _translated(error, reading=False)) is None:
                    raise
                raise translated from error
        self.accounts = SqlAccountRepository(self.connection)
        self.ledger = SqlLedgerRepository(self.connection)
        self.attempts = SqlRechargeAttemptRepository(self.connection)
        self.funds_charges = SqlFundsChargeRepository(self.connection)
        self.organizations = SqlOrganizationRepository(self.connection)
        self.api_keys = SqlApiKeyRepository(self.connection)
        self.audit_events = SqlAuditEventRepository(self.connection)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.connection.close()
        finally:
            self._release_writers()
        if exc is not None and (translated := _translated(exc, reading=not self._write)) is not None:
            raise translated from exc

    def _release_writers(self) -> None:
        if self._writers is not None and self._holding:
            self._holding = False
            self._writers.release()

    async def commit(self) -> None:
        if self.connection.opened is not None:  # a read that ran nothing has nothing to commit
            await self.connection.opened.commit()
        self.committed = True

    async def database_time(self) -> datetime | None:
        if self.connection.dialect.name == "sqlite":
            return None
        now: datetime = (await self.connection.execute(select(func.clock_timestamp()))).scalar_one()
        return now


_CONFLICT_STATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# connection_exception, operator_intervention (a restart, "starting up"), insufficient_resources ("too many clients"),
# and a database that is "not currently accepting connections" (ALLOW_CONNECTIONS false: 55000)
_UNAVAILABLE_CLASSES = ("08", "57P", "53", "55000")
_BUSY_STATES = frozenset({"55P03", "57014"})  # lock_not_available (lock_timeout), query_canceled (statement_timeout)
_SQLITE_STORAGE_ERRORS = ("database or disk is full", "disk I/O error")
_READ_ONLY = "25006"  # read_only_sql_transaction: a standby, or default_transaction_read_only (after a failover)


def _translated(error: BaseException, *, reading: bool) -> Exception | None:
    """The service-level error for a driver error that is not the use case's fault, else None. A read that lost
    its connection may run again (ReadConnectionLost); a write may not know whether its COMMIT took. The pool's
    own connects (point reads check out without a SQLAlchemy Connection) raise the DB-API error unwrapped."""
    if isinstance(error, DBAPIError | AsyncAdapt_asyncpg_dbapi.Error):
        orig = error.orig if isinstance(error, DBAPIError) else error
        state = getattr(orig, "sqlstate", None) or ""
        if state in _CONFLICT_STATES:
            return TransientConflict(f"database conflict (SQLSTATE {state})")
        if isinstance(orig, AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError):
            return TransientConflict("a statement prepared before a schema change")
        if (isinstance(error, DBAPIError) and error.connection_invalidated) or state.startswith(_UNAVAILABLE_CLASSES):
            lost = ReadConnectionLost if reading else StoreUnavailable
            return lost(f"database connection lost (SQLSTATE {state or 'none'})")
        # A lock held past lock_timeout or a statement past statement_timeout (PostgreSQL), or the write lock past
        # the busy timeout (SQLite: another program holds it): the transaction rolled back, and may run again.
        if state in _BUSY_STATES or "database is locked" in str(orig):
            return StoreUnavailable(f"database busy (SQLSTATE {state})" if state else "database busy (locked)")
        # A database that takes reads but no writes: the write rolled back, and may run again elsewhere or later.
        if state == _READ_ONLY or "readonly database" in str(orig):
            return StoreUnavailable(f"database read-only (SQLSTATE {state})" if state else "database read-only")
        # SQLite's disk full (SQLITE_FULL) or its file failing (SQLITE_IOERR): the transaction rolled back whole.
        # (PostgreSQL's disk full is class 53, above.)
        if any(reason in str(orig) for reason in _SQLITE_STORAGE_ERRORS):
            return StoreUnavailable(f"database storage failing ({orig})")
    if isinstance(error, OSError | TimeoutError):  # refused, unreachable, or timed out while connecting
        return StoreUnavailable(f"database unreachable ({type(error).__name__})")
    if isinstance(error, PoolTimeout):  # every connection of the pool busy for the pool timeout: overloaded
        return StoreUnavailable("no database connection free within the pool timeout")
    return None


class SqlUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine) -> None:
        # A read sees the latest commits at each statement, on both databases. PostgreSQL runs READ COMMITTED,
        # where each statement of a transaction sees them anyway, so reads run without BEGIN and ROLLBACK (two
        # round trips of a request's four). On SQLite the point reads are each a transaction of their own
        # (store/point_reads.py); a read's other statements (pages, counts) share the pooled connection's.
        self._read_engine = (engine if engine.dialect.name == "sqlite"
                             else engine.execution_options(isolation_level="AUTOCOMMIT"))
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        # SQLite runs one write transaction at a time anyway; queueing this process's writers here, instead
        # of in SQLite's busy handler (which sleeps and polls), keeps the waits short. Between processes,
        # writers wait in the database file's writers' line (store/sqlite_writer_lock.py); the database alone
        # keeps the balances right.
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._point_reader = point_reader(engine)
        self._transaction = transaction_statements(engine)
        if isinstance(reader := self._point_reader, SqlitePointReader):
            event.listen(engine.sync_engine, "engine_disposed", lambda _engine: reader.close())

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._write_engine if write else self._read_engine, write=write, writers=self._writers,
                             point_reader=self._point_reader, transaction=self._transaction)
