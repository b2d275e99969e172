"""SQLite point reads (store/point_reads.py): a read unit of work that needs only point reads takes no pooled
connection; the reads see every commit made before them, by any connection; a database that answers busy is
read through a pooled connection instead, which waits for it; a write transaction never reads through them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.bootstrap import Runtime
from credits_graphql.domain.access import Role
from credits_graphql.domain.ledger import Account, AccountStatus
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from credits_graphql.store import repositories
from credits_graphql.store.compiled import CompiledStatement
from credits_graphql.store.engine import create_engine
from credits_graphql.store.point_reads import PostgresqlPointReader, SqlitePointReader
from credits_graphql.store.tables import accounts, api_keys, organizations, recharge_attempts
from credits_graphql.store.unit_of_work import SqlUnitOfWorkFactory


@pytest.fixture
def sqlite_file(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        pytest.skip("point reads outside SQLAlchemy are SQLite's")
    return Path(database_url.split("///", 1)[1])


@pytest.fixture
async def engine(sqlite_file: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{sqlite_file}")
    yield engine
    await engine.dispose()


@pytest.fixture
def checkouts(engine: AsyncEngine) -> Iterator[list[object]]:
    taken: list[object] = []

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        taken.append(dbapi_connection)

    event.listen(engine.sync_engine, "checkout", on_checkout)
    yield taken
    event.remove(engine.sync_engine, "checkout", on_checkout)


async def a_key(deps: Deps) -> tuple[int, str]:
    org = await access.create_organization(deps, "Acme")
    key, secret = await access.create_api_key(deps, org.id, Role.ADMIN)
    return key.id, access.hash_key(secret)


async def test_a_read_of_point_reads_only_takes_no_pooled_connection(
        engine: AsyncEngine, deps: Deps, checkouts: list[object]) -> None:
    key_id, digest = await a_key(deps)
    uow = SqlUnitOfWorkFactory(engine)
    async with uow() as work:
        key = await work.api_keys.by_hash(digest)
        assert await work.accounts.get(1, 12345) is None
        assert await work.attempts.pending_for_accounts([12345]) == []
    assert key is not None
    assert (key.id, key.revoked_at) == (key_id, None)
    assert checkouts == []
    async with uow() as work:  # a statement that is not a point read takes one
        assert await work.organizations.count() == 1
    assert len(checkouts) == 1


async def test_point_reads_see_a_commit_made_by_another_connection_at_once(
        engine: AsyncEngine, deps: Deps, sqlite_file: Path) -> None:
    key_id, digest = await a_key(deps)
    uow = SqlUnitOfWorkFactory(engine)
    async with uow() as work:
        key = await work.api_keys.by_hash(digest)
        assert key is not None
        assert key.revoked_at is None
    revoked_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with closing(sqlite3.connect(sqlite_file, isolation_level=None)) as other:  # as another process would
        other.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", ("2026-01-02 03:04:05.000000", key_id))
    async with uow() as work:
        key = await work.api_keys.by_hash(digest)
    assert key is not None
    assert key.revoked_at == revoked_at  # read as SQLAlchemy reads it: aware, UTC


async def test_a_point_read_does_not_wait_for_a_writer_that_holds_the_lock(
        engine: AsyncEngine, deps: Deps, sqlite_file: Path, checkouts: list[object]) -> None:
    _, digest = await a_key(deps)
    uow = SqlUnitOfWorkFactory(engine)
    with closing(sqlite3.connect(sqlite_file, timeout=0, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE api_keys SET revoked_at = '2026-01-02 03:04:05.000000'")
        async with uow() as work:
            key = await work.api_keys.by_hash(digest)
        other.execute("ROLLBACK")
    assert key is not None
    assert key.revoked_at is None  # what was committed, not the write in progress
    assert checkouts == []


def a_busy_error(database: Path) -> sqlite3.OperationalError:
    """A real SQLITE_BUSY, from a connection refused the write lock that another holds."""
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as holder, \
            closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as refused:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as caught:
            refused.execute("BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    return caught.value


class FailingOnce:
    """A sqlite3 connection whose next SELECT fails with `error`."""

    def __init__(self, connection: sqlite3.Connection, error: sqlite3.Error | None,
                 opened: list[FailingOnce]) -> None:
        self._connection, self.error = connection, error
        self.failed: sqlite3.Error | None = None
        opened.append(self)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("SELECT") and self.error is not None:
            self.failed, self.error = self.error, None
            raise self.failed
        return self._connection.execute(sql, *args)

    def close(self) -> None:
        self._connection.close()


@pytest.fixture(params=["busy", "disk I/O error"])
def point_reads_opened(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                       sqlite_file: Path) -> list[FailingOnce]:
    """The connections the point reads open; the first one's first SELECT fails, busy or otherwise."""
    opened: list[FailingOnce] = []
    error = a_busy_error(sqlite_file) if request.param == "busy" else sqlite3.DatabaseError(request.param)
    open_connection = SqlitePointReader._open

    def failing_once(reader: SqlitePointReader) -> Any:
        connection = FailingOnce(open_connection(reader), None if opened else error, opened)
        reader._connection = connection  # type: ignore[assignment]
        return connection

    monkeypatch.setattr(SqlitePointReader, "_open", failing_once)
    return opened


async def test_a_point_read_that_fails_is_read_through_a_pooled_connection(
        engine: AsyncEngine, deps: Deps, checkouts: list[object], point_reads_opened: list[FailingOnce]) -> None:
    key_id, digest = await a_key(deps)
    uow = SqlUnitOfWorkFactory(engine)
    for _ in range(2):
        async with uow() as work:
            key = await work.api_keys.by_hash(digest)
        assert key is not None
        assert key.id == key_id
    assert len(checkouts) == 1  # the failed read, once
    # A busy database leaves the connection open for the next read; any other failure has it opened anew.
    busy = isinstance(point_reads_opened[0].failed, sqlite3.OperationalError)
    assert len(point_reads_opened) == (1 if busy else 2)


async def test_a_write_transaction_reads_its_own_writes(engine: AsyncEngine, deps: Deps) -> None:
    org = await access.create_organization(deps, "Acme")
    uow = SqlUnitOfWorkFactory(engine)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with uow(write=True) as work:
        account = await work.accounts.add(Account(  # not committed yet
            id=0, org_id=org.id, name="Ops", currency="SEK", status=AccountStatus.ACTIVE, balance_micros=0,
            created_at=at, payment_method=None))
        found = await work.accounts.get(org.id, account.id)
    assert found is not None
    assert found.name == "Ops"


def test_a_point_read_is_a_statement_with_each_parameter_bound_once() -> None:
    expanding = select(accounts).where(accounts.c.id.in_([1, 2]))
    with pytest.raises(ValueError, match="expanding IN"):
        CompiledStatement(expanding, sqlite.dialect())


async def test_a_column_sqlite_cannot_decode_fails_the_read_through_sqlalchemy(
        engine: AsyncEngine, deps: Deps, sqlite_file: Path) -> None:
    """Python's own sqlite3 errors carry no SQLite error code: the read still falls back and fails as SQLAlchemy
    reports it (the store's usual error), not with an error of the fallback's own."""
    key_id, digest = await a_key(deps)
    with closing(sqlite3.connect(sqlite_file, isolation_level=None)) as other:
        other.execute("UPDATE api_keys SET prefix = CAST(x'ff' AS TEXT) WHERE id = ?", (key_id,))
    async with SqlUnitOfWorkFactory(engine)() as work:
        with pytest.raises(OperationalError, match="UTF-8"):
            await work.api_keys.by_hash(digest)


EQUIVALENT_AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=5, minutes=30)))


async def test_a_point_read_reads_each_value_as_sqlalchemy_does(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """On both databases: values, their types, time zones, NULLs, large integers, text beyond ASCII, and the
    constant bound in a statement (the pending status)."""
    served: list[bool] = []
    for reader in (SqlitePointReader, PostgresqlPointReader):
        def spy(rows: Any) -> Any:
            async def counted(*args: Any) -> Any:
                found = await rows(*args)
                served.append(found is not None)
                return found
            return counted
        monkeypatch.setattr(reader, "rows", spy(reader.rows))
    uow = SqlUnitOfWorkFactory(runtime.engine)
    at = EQUIVALENT_AT
    async with uow(write=True) as work:
        insert_values = [
            (organizations, {"id": 7, "name": "Ωmega", "created_at": at}),
            (api_keys, {"id": 9, "org_id": 7, "role": "ADMIN", "key_hash": "h" * 64, "prefix": "cgk_abc",
                        "created_at": at, "last_used_at": None, "revoked_at": at, "expires_at": at}),
            (accounts, {"id": 11, "org_id": 7, "name": "名前", "currency": "EUR", "status": "ACTIVE",
                        "balance_micros": 2**62, "created_at": at, "recharge_status": "ACTIVE",
                        "recharge_amount_micros": 5, "recharge_trigger_micros": None, "recharge_updated_at": at,
                        "recharge_failures": 3, "payment_token": "tok", "payment_brand": None,
                        "payment_last4": "4242", "payment_updated_at": None}),
            (recharge_attempts, {"id": 13, "account_id": 11, "status": "PENDING", "amount_micros": 5,
                                 "currency": "EUR", "failure_reason": None, "created_at": at, "not_before": at,
                                 "lease_expires_at": None, "settled_at": at, "transaction_id": None,
                                 "triggered_by_entry_id": None}),
        ]
        for table, values in insert_values:
            await work.connection.execute(insert(table).values(values))
        await work.commit()
    cases = [(repositories._KEY_BY_HASH, {"key_hash": "h" * 64}),
             (repositories._ACCOUNT, {"account_id": 11, "org_id": 7}),
             (repositories._PENDING_ATTEMPT, {"account_id": 11})]
    async with uow() as work:
        for statement, values in cases:
            [fast] = await work.connection.point_read(statement, values)
            [slow] = (await work.connection.execute(statement, values)).all()
            assert fast._fields == slow._fields
            assert list(fast) == list(slow)
            assert [type(v) for v in fast] == [type(v) for v in slow]
            assert [getattr(v, "tzinfo", None) for v in fast] == [getattr(v, "tzinfo", None) for v in slow]
    assert served == [True, True, True]
