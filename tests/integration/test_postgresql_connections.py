"""PostgreSQL connections that the server dropped while they sat in the pool: found at checkout and replaced
(a closed one at no cost, one idle for a while by a ping; one in steady use is not pinged, a round trip per
request saved), and a read that meets a dead connection anyway runs again, once, on a new one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.service.transient import ReadConnectionLost, StoreUnavailable, retry_on_conflict
from credits_graphql.store import engine as engine_module
from credits_graphql.store.engine import create_engine
from credits_graphql.store.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from tests.crash.conftest import wait_for

BACKEND = text("SELECT pg_backend_pid()")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture
def pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The connections pinged at checkout."""
    pinged: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pinged.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pinged


async def terminate(postgres_url: str, pid: int) -> None:
    """Ends the server process of a connection, as a restart of the server would, and waits until it is gone."""
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def gone() -> bool:
            return not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

        await wait_for(gone, f"server process {pid} gone", 10)
    finally:
        await admin.close()


async def cancel_while_it_waits_for_a_lock(url: str, lock: str, lock_arguments: tuple[object, ...],
                                          work: Callable[[], Awaitable[object]], query_like: str) -> None:
    """Runs `work` while another connection holds the lock that `lock` takes, and cancels it once its statement
    whose text is LIKE `query_like` waits for that lock."""
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with admin.transaction():
            await admin.execute(lock, *lock_arguments)
            waiting = asyncio.create_task(work())

            async def blocked_or_ended() -> bool:
                return waiting.done() or bool(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                    query_like))

            await wait_for(blocked_or_ended, f"{query_like} waiting for a lock", 10)
            if waiting.done():  # failed, or went through, without waiting: say how
                pytest.fail(f"{query_like} did not wait for the lock: {waiting.result()!r}")
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
    finally:
        await admin.close()


async def backend(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(BACKEND)).scalar_one())


async def test_a_connection_in_steady_use_is_not_pinged(engine: AsyncEngine, pings: list[object]) -> None:
    first = await backend(engine)
    assert [await backend(engine) for _ in range(3)] == [first] * 3
    assert pings == []


async def test_a_connection_idle_in_the_pool_for_a_while_is_pinged_first(
        engine: AsyncEngine, pings: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    first = await backend(engine)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert await backend(engine) == first
    assert len(pings) == 1


async def test_a_connection_the_server_closed_is_replaced_at_checkout(
        engine: AsyncEngine, postgres_url: str, pings: list[object]) -> None:
    async with engine.connect() as connection:
        first = int((await connection.execute(BACKEND)).scalar_one())
        client = (await connection.get_raw_connection()).driver_connection
    await terminate(postgres_url, first)
    # Once the client has read the server's goodbye (the event loop may not have got to it yet):
    await wait_for(client.is_closed, "the client saw the server close the connection", 10)
    assert await backend(engine) != first
    assert pings == []  # seen closed without a round trip


@pytest.mark.parametrize("write", [False, True])
async def test_a_unit_of_work_that_loses_its_connection_is_told_whether_it_may_run_again(
        engine: AsyncEngine, postgres_url: str, write: bool) -> None:
    uow = SqlUnitOfWorkFactory(engine)

    async def lose_the_connection() -> None:
        async with uow(write=write) as work:
            await terminate(postgres_url, int((await work.connection.execute(BACKEND)).scalar_one()))
            await work.connection.execute(text("SELECT 1"))

    with pytest.raises(StoreUnavailable, match="connection lost") as lost:
        await lose_the_connection()
    # A read changed nothing and may run again; a write cannot know whether its COMMIT took.
    assert isinstance(lost.value, ReadConnectionLost) is not write
    async with uow(write=write) as work:  # the pool has a new connection
        assert (await work.connection.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_use_case_whose_read_lost_its_connection_runs_again_once(
        engine: AsyncEngine, postgres_url: str) -> None:
    uow = SqlUnitOfWorkFactory(engine)
    runs: list[int] = []

    @retry_on_conflict
    async def read(losses: int) -> int:
        async with uow() as work:
            pid = int((await work.connection.execute(BACKEND)).scalar_one())
            runs.append(pid)
            if len(runs) <= losses:
                await terminate(postgres_url, pid)
            return int((await work.connection.execute(text("SELECT 1"))).scalar_one())

    assert await read(1) == 1
    assert len(runs) == 2
    assert runs[0] != runs[1]
    runs.clear()
    with pytest.raises(ReadConnectionLost):
        await read(2)
    assert len(runs) == 2


@pytest.fixture
async def migrated(postgres_run_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_run_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_a_point_read_that_meets_a_dead_connection_reads_on_a_new_one(
        migrated: AsyncEngine, postgres_run_url: str) -> None:
    """Point reads go straight through asyncpg (store/point_reads.py); a failure sends them through SQLAlchemy."""
    uow = SqlUnitOfWorkFactory(migrated)
    async with uow() as work:
        first = int((await work.connection.execute(BACKEND)).scalar_one())
        await terminate(postgres_run_url, first)
        assert await work.api_keys.by_hash("no such key") is None
        assert await work.accounts.get(0, 0) is None  # (ids start at 1; other tests leave rows in this database)
        assert int((await work.connection.execute(BACKEND)).scalar_one()) != first


@pytest.mark.filterwarnings("error")  # SQLAlchemy warns of a connection that went back to the pool only when collected
async def test_a_read_of_point_reads_builds_no_connection_object_and_its_other_statements_share_its_connection(
        migrated: AsyncEngine) -> None:
    """The point reads check a connection out of the pool without a SQLAlchemy Connection (half the cost of one,
    on every request's key check); a statement through SQLAlchemy after them runs on that same connection, in
    autocommit as reads do, and the unit of work returns it to the pool."""
    connects: list[object] = []
    event.listen(migrated.sync_engine, "engine_connect", connects.append)
    uow = SqlUnitOfWorkFactory(migrated)
    async with uow() as work:
        assert await work.api_keys.by_hash("no such key") is None
        assert await work.accounts.get(0, 0) is None
        assert connects == []
        pooled = await work.connection.pooled()
        assert pooled is not None
        pid = pooled.driver_connection.get_server_pid()
        assert int((await work.connection.execute(BACKEND)).scalar_one()) == pid
        assert work.connection.opened is not None
        assert not work.connection.opened.sync_connection.connection.driver_connection.is_in_transaction()
        assert len(connects) == 1
    assert migrated.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with uow() as work:  # the pool's one connection came back
        assert await work.api_keys.by_hash("no such key") is None
        pooled = await work.connection.pooled()
        assert pooled is not None
        assert pooled.driver_connection.get_server_pid() == pid


async def test_a_point_read_whose_connection_died_before_any_other_statement_reads_on_a_new_one(
        migrated: AsyncEngine, postgres_run_url: str) -> None:
    uow = SqlUnitOfWorkFactory(migrated)
    async with uow() as work:
        assert await work.api_keys.by_hash("no such key") is None
        pooled = await work.connection.pooled()
        assert pooled is not None
        first = pooled.driver_connection.get_server_pid()
        await terminate(postgres_run_url, first)
        assert await work.api_keys.by_hash("no such key") is None  # on a new connection (the pool holds one)
        assert int((await work.connection.execute(BACKEND)).scalar_one()) != first
    async with uow() as work:
        assert int((await work.connection.execute(BACKEND)).scalar_one()) != first


async def test_a_point_read_cancelled_while_it_waits_leaves_the_pool_a_working_connection(
        migrated: AsyncEngine, postgres_run_url: str) -> None:
    uow = SqlUnitOfWorkFactory(migrated)

    async def read() -> object:
        async with uow() as work:
            return await work.api_keys.by_hash("no such key")

    assert await read() is None
    await cancel_while_it_waits_for_a_lock(postgres_run_url, "LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE", (), read,
                                           "SELECT api_keys.id%")
    assert await read() is None  # on a connection that answers, not one still busy with the cancelled query


async def test_a_read_whose_point_read_failed_goes_on_in_autocommit(migrated: AsyncEngine,
                                                                    postgres_run_url: str) -> None:
    """The read goes on on a new connection as reads run, in autocommit: no transaction left open between the
    statements of a request (nor one whose failed statement would fail every later one)."""
    uow = SqlUnitOfWorkFactory(migrated)

    def in_transaction(work: SqlUnitOfWork) -> bool:
        assert work.connection.opened is not None
        return bool(work.connection.opened.sync_connection.connection.driver_connection.is_in_transaction())

    async with uow() as work:
        first = int((await work.connection.execute(BACKEND)).scalar_one())
        assert not in_transaction(work)
        await terminate(postgres_run_url, first)
        assert await work.api_keys.by_hash("no such key") is None
        assert int((await work.connection.execute(BACKEND)).scalar_one()) != first
        assert not in_transaction(work)
