"""A write transaction's hot statements run on the driver, outside SQLAlchemy's pipeline
(store/transaction_statements.py): in the transaction, read and written as through SQLAlchemy, and failing as
through SQLAlchemy, on both databases."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy import Column, Integer, MetaData, Table, Text, event, func, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.bootstrap import Runtime
from credits_graphql.domain.ledger import CreditService, EntryKind, LedgerEntry
from credits_graphql.service import ledger, usage_batch
from credits_graphql.service.deps import Deps
from credits_graphql.service.transient import StoreUnavailable, TransientConflict
from credits_graphql.store import repositories
from credits_graphql.store.compiled import CompiledStatement
from credits_graphql.store.tables import ledger_entries
from credits_graphql.store.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from tests.conftest import Org
from tests.integration.test_postgresql_connections import BACKEND, cancel_while_it_waits_for_a_lock, terminate
from tests.integration.test_sqlite_driver import writers_line_is_free
from tests.service.support import fund, open_account

T = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("v", Text))  # the `engine` fixture's
AT = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=-3)))


@pytest.fixture
def statements_through_sqlalchemy(runtime: Runtime) -> list[str]:
    """The SQL of each statement SQLAlchemy's pipeline runs (not BEGIN, COMMIT or ROLLBACK)."""
    seen: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    return seen


async def _entries(deps: Deps, account_id: int) -> list[Any]:
    async with deps.uow() as work:
        assert isinstance(work, SqlUnitOfWork)
        return list((await work.connection.execute(
            select(ledger_entries).where(ledger_entries.c.account_id == account_id).order_by(ledger_entries.c.id)
        )).all())


async def test_a_usage_report_runs_none_of_its_statements_through_sqlalchemy(
        deps: Deps, org: Org, statements_through_sqlalchemy: list[str]) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    statements_through_sqlalchemy.clear()
    done = await ledger.record_usage(deps, org.id, ledger.RecordUsage(
        account.id, CreditService.DOMESTIC_CALLING, Decimal("1.25"), "call-1"))
    assert done.account.balance_micros == 8_750_000
    assert statements_through_sqlalchemy == []
    replayed = await ledger.record_usage(deps, org.id, ledger.RecordUsage(
        account.id, CreditService.DOMESTIC_CALLING, Decimal("1.25"), "call-1"))
    assert replayed.entry.id == done.entry.id
    assert [row.amount_micros for row in await _entries(deps, account.id)] == [10_000_000, -1_250_000]


async def test_a_batch_reads_and_writes_its_accounts_and_entries_outside_sqlalchemy(
        deps: Deps, org: Org, statements_through_sqlalchemy: list[str]) -> None:
    """As does a group of usage reports (service/usage_combiner.py): the same use case. Keys used before the batch
    and within it are found; the new entries' ids ascend in the items' order, on one account or several."""
    first, second = await open_account(deps, org.id), await open_account(deps, org.id)
    for account in (first, second):
        await fund(deps, org.id, account.id, "10")

    def usage(account_id: int, amount: str, key: str) -> ledger.RecordUsage:
        return ledger.RecordUsage(account_id, CreditService.DOMESTIC_CALLING, Decimal(amount), key)

    [before] = await usage_batch.record_usage_batch(deps, org.id, [usage(first.id, "1", "k1")])
    for accounts in ([first.id], [first.id, second.id]):
        statements_through_sqlalchemy.clear()
        done = await usage_batch.record_usage_batch(deps, org.id, [
            usage(first.id, "1", "k1"), *(usage(account_id, "2", f"k2-{len(accounts)}") for account_id in accounts),
            usage(first.id, "2", f"k2-{len(accounts)}")])
        assert all(isinstance(result, ledger.Recorded) for result in done), done
        recorded = [result.entry.id for result in done if isinstance(result, ledger.Recorded)]
        assert isinstance(before, ledger.Recorded)
        assert recorded[0] == before.entry.id  # replayed from the batch before
        assert recorded[1] == recorded[-1]  # replayed within the batch
        assert recorded[1:-1] == sorted(recorded[1:-1])
        # (a replay's recharge is looked up through SQLAlchemy)
        assert [sql for sql in statements_through_sqlalchemy if "accounts" in sql or "ledger_entries" in sql] == []
    assert [row.amount_micros for row in await _entries(deps, second.id)] == [10_000_000, -2_000_000]


async def test_a_rollback_undoes_the_statements_run_on_the_driver(deps: Deps, org: Org) -> None:
    """On PostgreSQL SQLAlchemy's adapter sends BEGIN with its first statement; these send it themselves."""
    account = await open_account(deps, org.id)

    async def credit(key: str, *, commit: bool) -> None:
        async with deps.uow(write=True) as work:
            locked = await work.accounts.get(org.id, account.id, for_update=True)
            assert locked is not None
            await work.ledger.append(locked.credit(EntryKind.FUNDS_ADDED, 5_000_000, AT, idempotency_key=key))
            await work.accounts.save(locked)
            if commit:
                await work.commit()

    await credit("undone", commit=False)
    assert await _entries(deps, account.id) == []
    async with deps.uow() as work:
        unchanged = await work.accounts.get(org.id, account.id)
    assert unchanged is not None
    assert unchanged.balance_micros == 0
    await credit("kept", commit=True)
    [kept] = await _entries(deps, account.id)
    assert (kept.idempotency_key, kept.amount_micros) == ("kept", 5_000_000)


async def test_a_row_written_and_read_on_the_driver_is_the_row_sqlalchemy_writes_and_reads(
        deps: Deps, org: Org) -> None:
    """Each value and its type: a time zone other than UTC given, NULLs, enums, large integers, text beyond ASCII."""
    account = await open_account(deps, org.id)
    entry = LedgerEntry(id=None, account_id=account.id, kind=EntryKind.USAGE, amount_micros=-(2**62),
                        balance_after_micros=2**40, currency="SEK", service=CreditService.TOLL_FREE, minutes=None,
                        reference="Ωmega 名前", occurred_at=AT, created_at=AT.astimezone(UTC),
                        idempotency_key="driver", request_hash=None)
    async with deps.uow(write=True) as work:
        assert isinstance(work, SqlUnitOfWork)
        appended = await work.ledger.append(entry)
        through_sqlalchemy = {name: getattr(entry, name) for name in repositories._ENTRY_FIELDS}
        through_sqlalchemy["idempotency_key"] = "sqlalchemy"
        await work.connection.execute(repositories._APPEND_ENTRY, through_sqlalchemy)
        read_on_driver = await work.ledger.by_idempotency_key(account.id, "driver")
        [slow] = (await work.connection.execute(repositories._ENTRY_BY_KEY,
                                                {"account_id": account.id, "key": "driver"})).all()
        [fast] = await work.connection.point_read(repositories._ENTRY_BY_KEY,
                                                  {"account_id": account.id, "key": "driver"})
        await work.commit()
    assert read_on_driver == appended
    assert list(fast) == list(slow)
    assert [type(value) for value in fast] == [type(value) for value in slow]
    driver_row, sqlalchemy_row = await _entries(deps, account.id)
    assert driver_row.id == appended.id
    different = {"id", "idempotency_key"}
    assert ({name: value for name, value in driver_row._mapping.items() if name not in different}
            == {name: value for name, value in sqlalchemy_row._mapping.items() if name not in different})
    assert driver_row.occurred_at == AT
    assert driver_row.occurred_at.utcoffset() == timedelta(0)


async def test_entries_appended_together_get_their_own_ids_and_a_violation_among_them_changes_nothing(
        deps: Deps, org: Org) -> None:
    """A batch's entries are inserted together (on SQLite, one trip to the driver's thread): each is answered with
    the id it was stored under, and one that breaks a constraint fails them all, as SQLAlchemy's error."""
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10", key="taken")

    async def append(keys: list[str]) -> list[LedgerEntry]:
        async with deps.uow(write=True) as work:
            locked = await work.accounts.get(org.id, account.id, for_update=True)
            assert locked is not None
            stored = await work.ledger.append_many([
                locked.credit(EntryKind.FUNDS_ADDED, 1_000_000 * n, AT, idempotency_key=key)
                for n, key in enumerate(keys, start=1)])
            await work.accounts.save(locked)
            await work.commit()
        return stored

    stored = await append(["c", "a", "b"])
    rows = (await _entries(deps, account.id))[1:]
    assert [(entry.id, entry.idempotency_key, entry.amount_micros) for entry in stored] == [
        (row.id, row.idempotency_key, row.amount_micros) for row in rows]
    assert [entry.idempotency_key for entry in stored] == ["c", "a", "b"]
    with pytest.raises(IntegrityError):
        await append(["d", "taken", "e"])
    assert [row.idempotency_key for row in await _entries(deps, account.id)] == ["taken", "c", "a", "b"]


async def test_accounts_saved_together_are_each_saved_in_the_transaction(deps: Deps, org: Org) -> None:
    """A batch saves its accounts together (on PostgreSQL in one round trip): each keeps its own balance, and a
    rollback undoes them all."""
    opened = [await open_account(deps, org.id) for _ in range(3)]

    async def credit(amounts: list[int], *, commit: bool) -> None:
        async with deps.uow(write=True) as work:
            locked = await work.accounts.lock_many([(org.id, account.id) for account in opened])
            for account, micros in zip(locked, amounts, strict=True):
                await work.ledger.append(account.credit(EntryKind.FUNDS_ADDED, micros, AT))
            await work.accounts.save_many(locked)
            if commit:
                await work.commit()

    async def balances() -> list[int]:
        async with deps.uow() as work:
            return [account.balance_micros for account in await work.accounts.get_many(
                org.id, [account.id for account in opened])]

    await credit([7_000_000, 8_000_000, 9_000_000], commit=False)
    assert await balances() == [0, 0, 0]
    await credit([1_000_000, 2_000_000, 3_000_000], commit=True)
    assert await balances() == [1_000_000, 2_000_000, 3_000_000]


async def test_a_constraint_violation_on_the_driver_is_sqlalchemys_error_and_changes_nothing(
        deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10", key="taken")

    async def credit_with_the_key_taken() -> None:
        async with deps.uow(write=True) as work:
            locked = await work.accounts.get(org.id, account.id, for_update=True)
            assert locked is not None
            await work.ledger.append(locked.credit(EntryKind.FUNDS_ADDED, 1_000_000, AT, idempotency_key="taken"))
            await work.accounts.save(locked)
            await work.commit()

    with pytest.raises(IntegrityError):
        await credit_with_the_key_taken()
    assert [row.amount_micros for row in await _entries(deps, account.id)] == [10_000_000]
    used = await ledger.record_usage(deps, org.id, ledger.RecordUsage(  # the next writer gets in
        account.id, CreditService.DOMESTIC_CALLING, Decimal("1"), "next"))
    assert used.account.balance_micros == 9_000_000


def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks and server processes")


async def test_a_deadlock_between_driver_statements_is_a_transient_conflict(
        deps: Deps, org: Org, database_url: str) -> None:
    _postgresql_only(database_url)
    first, second = await open_account(deps, org.id), await open_account(deps, org.id, name="Other")
    both_hold_one = asyncio.Barrier(2)

    async def lock(one: int, other: int) -> None:
        async with deps.uow(write=True) as work:
            await work.accounts.get(org.id, one, for_update=True)
            await both_hold_one.wait()
            await work.accounts.get(org.id, other, for_update=True)
            await work.commit()

    outcomes = await asyncio.gather(lock(first.id, second.id), lock(second.id, first.id), return_exceptions=True)
    failed = [outcome for outcome in outcomes if outcome is not None]
    assert len(failed) == 1, outcomes
    assert isinstance(failed[0], TransientConflict)
    assert "40P01" in str(failed[0])


async def test_a_write_whose_connection_died_is_told_it_may_not_run_again_and_the_pool_recovers(
        deps: Deps, org: Org, database_url: str) -> None:
    _postgresql_only(database_url)
    account = await open_account(deps, org.id)

    async def lock_after_losing_the_connection() -> None:
        async with deps.uow(write=True) as work:
            assert isinstance(work, SqlUnitOfWork)
            await terminate(database_url, int((await work.connection.execute(BACKEND)).scalar_one()))
            await work.accounts.get(org.id, account.id, for_update=True)

    with pytest.raises(StoreUnavailable, match="connection lost"):
        await lock_after_losing_the_connection()
    used = await fund(deps, org.id, account.id, "30")
    assert used.account.balance_micros == 30_000_000


async def _pooled_backends(runtime: Runtime, count: int) -> set[int]:
    """The server processes of `count` connections checked out at once (and given back)."""
    connections = [await runtime.engine.connect() for _ in range(count)]
    try:
        return {int((await connection.execute(BACKEND)).scalar_one()) for connection in connections}
    finally:
        for connection in connections:
            await connection.close()


@pytest.mark.parametrize("write", [True, False])
async def test_a_connection_lost_on_the_driver_has_every_older_pooled_connection_replaced(
        runtime: Runtime, deps: Deps, org: Org, database_url: str, write: bool) -> None:
    """As SQLAlchemy does after a disconnect: the others may be dead too (a failover, a restart), and a connection
    used within the last second is not pinged at checkout (store/engine.py)."""
    _postgresql_only(database_url)
    account = await open_account(deps, org.id)
    before = await _pooled_backends(runtime, 2)

    async def lose_the_connection() -> None:
        async with deps.uow(write=write) as work:
            assert isinstance(work, SqlUnitOfWork)
            await terminate(database_url, int((await work.connection.execute(BACKEND)).scalar_one()))
            await work.accounts.get(org.id, account.id, for_update=write)  # on the driver (a point read if not)

    if write:
        with pytest.raises(StoreUnavailable, match="connection lost"):
            await lose_the_connection()
    else:
        await lose_the_connection()  # read again through SQLAlchemy, on a new connection
    assert not before & await _pooled_backends(runtime, 2)


async def test_a_driver_failure_that_is_not_a_database_error_is_the_stores_as_through_sqlalchemy(
        deps: Deps, org: Org, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _postgresql_only(database_url)
    account = await open_account(deps, org.id)

    async def reset(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    async def lock() -> None:
        async with deps.uow(write=True) as work:
            monkeypatch.setattr(PreparedStatement, "fetch", reset)
            await work.accounts.get(org.id, account.id, for_update=True)

    with pytest.raises(StoreUnavailable, match="unreachable"):
        await lock()


async def test_a_write_after_another_process_changed_the_schema_runs_again_and_moves_money_once(
        runtime: Runtime, deps: Deps, org: Org, database_url: str) -> None:
    """A statement prepared before an ALTER TABLE made elsewhere (a `migrate` while the service runs) fails its
    transaction with InvalidCachedStatementError: the use case runs again, on re-prepared statements."""
    _postgresql_only(database_url)
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")

    async def report(key: str) -> ledger.Recorded:
        return await ledger.record_usage(deps, org.id, ledger.RecordUsage(
            account.id, CreditService.DOMESTIC_CALLING, Decimal("1"), key, reference="call"))

    await asyncio.gather(*(report(f"before-{n}") for n in range(3)))  # prepared on a few pooled connections
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute("ALTER TABLE ledger_entries ALTER COLUMN reference TYPE varchar(300)")
        try:
            done = await asyncio.gather(*(report(f"after-{n}") for n in range(3)))
        finally:
            await admin.execute("ALTER TABLE ledger_entries ALTER COLUMN reference TYPE varchar(255)")
    finally:
        await admin.close()
    assert min(recorded.account.balance_micros for recorded in done) == 4_000_000
    assert len(await _entries(deps, account.id)) == 7


async def test_a_write_cancelled_while_it_waits_for_a_row_lock_leaves_the_pool_a_working_connection(
        deps: Deps, org: Org, database_url: str) -> None:
    _postgresql_only(database_url)
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")

    async def report(key: str) -> ledger.Recorded:
        return await ledger.record_usage(deps, org.id, ledger.RecordUsage(
            account.id, CreditService.DOMESTIC_CALLING, Decimal("1"), key))

    await cancel_while_it_waits_for_a_lock(database_url, "SELECT id FROM accounts WHERE id = $1 FOR UPDATE",
                                           (account.id,), lambda: report("cancelled"), "SELECT accounts.id%FOR UPDATE")
    assert (await report("next")).account.balance_micros == 9_000_000  # on a connection that answers
    assert [row.idempotency_key for row in await _entries(deps, account.id)] == ["fund-1", "next"]


async def test_a_statement_cancelled_on_the_sqlite_thread_leaves_no_lock_and_no_row(
        engine: AsyncEngine, database: Path) -> None:
    """As when the client leaves mid-request: the connection is invalidated, its transaction and the writers'
    line go with it, and the next writer gets in at once."""
    started, release = threading.Event(), threading.Event()

    def block() -> int:
        started.set()
        release.wait(timeout=30)
        return 1

    uow = SqlUnitOfWorkFactory(engine)

    async def write() -> None:
        async with uow(write=True) as work:
            opened = await work.connection.open()
            raw = (await opened.get_raw_connection()).driver_connection
            raw._conn.create_function("block", 0, block)
            await work.connection.write(insert(T), {"id": 1, "v": "never"})  # travels with the next statement
            await work.connection.point_read(select(func.block().label("blocked")), {})
            await work.commit()

    task = asyncio.create_task(write())
    await asyncio.to_thread(started.wait, 30)
    assert not writers_line_is_free(database)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writers_line_is_free(database)
    with closing(sqlite3.connect(database)) as other:
        assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)
    async with uow(write=True) as work:
        await work.connection.write(insert(T), {"id": 2, "v": "next"})
        await work.commit()
    with closing(sqlite3.connect(database)) as other:
        assert other.execute("SELECT id, v FROM t").fetchall() == [(2, "next")]


def test_an_insert_with_a_default_computed_in_python_is_left_to_sqlalchemy() -> None:
    table = Table("d", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer, default=lambda: 1))
    with pytest.raises(ValueError, match="default computed in Python"):
        CompiledStatement(insert(table), sqlite.dialect(), ("id",))


@pytest.mark.parametrize("dialect", [sqlite.dialect(), asyncpg_dialect()], ids=["sqlite", "postgresql"])
def test_value_sets_processed_together_are_each_processed_as_alone(dialect: Any) -> None:
    """A batch's value sets share objects (its timestamp), processed once while they repeat: each set's
    parameters are still the ones it would have alone, including after the shared object changes."""
    shared, other = AT, AT + timedelta(microseconds=1)
    names = repositories._ENTRY_FIELDS
    base = {name: None for name in names} | {"account_id": 1, "kind": "USAGE", "amount_micros": -1,
                                               "balance_after_micros": 0, "currency": "SEK"}
    value_sets = [base | {"occurred_at": occurred, "created_at": created, "idempotency_key": f"k{n}"}
                  for n, (occurred, created) in enumerate([(shared, shared), (shared, other), (other, other),
                                                           (shared, shared), (AT.astimezone(UTC), shared)])]
    compiled = CompiledStatement(repositories._APPEND_ENTRY, dialect, names)
    assert compiled.parameters_many(value_sets) == [compiled.parameters(values) for values in value_sets]
