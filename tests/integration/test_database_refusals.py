"""A database that answers but refuses the work: PostgreSQL refusing new connections (starting up after a restart,
or full), a lock held past `lock_timeout`, SQLite's write lock held by another program past the busy timeout.
Each is a 503 with Retry-After that the client may retry with its idempotency key, as when the database is down
(README, Failures), and not an internal error; nothing is recorded, and the retry records once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime, bootstrap
from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.store import engine as engine_module
from credits_graphql.store.engine import create_engine
from tests.api.documents import add_funds, codes_of, create_account
from tests.conftest import GraphQLClient, Org

RECORD = """mutation($id: ID!, $key: String!) { recordUsage(input: {accountId: $id, service: TOLL_FREE, amount: "1",
    idempotencyKey: $key}) { transaction { balanceAfter { amount } } userErrors { code } } }"""
BALANCE = """query($id: ID!) { account(id: $id) { balance { available { amount } } } }"""
BATCH = """mutation($in: RecordUsageBatchInput!) { recordUsageBatch(input: $in) { results { transaction { id } } } }"""


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert codes_of(response) == ["SERVICE_UNAVAILABLE"]
    assert response.json().get("data") is None


@asynccontextmanager
async def client_of(runtime: Runtime, key: str) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=build_app(runtime, run_worker=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield GraphQLClient(client, key)
    await runtime.close()


async def funded_account(gql: GraphQLClient) -> str:
    account_id = str((await create_account(gql, "Ops", "SEK", "tok_visa"))["id"])
    await add_funds(gql, account_id, "10", key="seed")
    return account_id


async def balance(gql: GraphQLClient, account_id: str) -> str:
    return str((await gql(BALANCE, {"id": account_id}))["account"]["balance"]["available"]["amount"])


@asynccontextmanager
async def refusing_postgresql(sqlstate: str, message: str) -> AsyncIterator[int]:
    """A server that answers every connection as PostgreSQL does while it starts up or when it is full: no SSL, then
    a FATAL error for the start-up message, and it hangs up. Yields its port."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(8)  # SSLRequest
        writer.write(b"N")
        await reader.read(65536)  # StartupMessage
        body = b"SFATAL\0VFATAL\0C" + sqlstate.encode() + b"\0M" + message.encode() + b"\0\0"
        writer.write(b"E" + (len(body) + 4).to_bytes(4, "big") + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize(("sqlstate", "message"), [("57P03", "the database system is starting up"),
                                                   ("53300", "sorry, too many clients already"),
                                                   ("55000", 'database "x" is not currently accepting connections')])
async def test_a_postgresql_refusing_new_connections_is_a_503_to_retry(
        runtime: Runtime, sqlstate: str, message: str) -> None:
    async with refusing_postgresql(sqlstate, message) as port:
        refused = bootstrap(replace(runtime.settings, database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x"))
        async with client_of(refused, "cgk_any") as gql:
            assert_unavailable(await gql.post(BALANCE, {"id": "QWNjb3VudDox"}))
            assert_unavailable(await gql.post(RECORD, {"id": "QWNjb3VudDox", "key": "k"}))


@pytest.mark.parametrize("guard", ["lock_timeout", "statement_timeout"])
async def test_a_lock_held_past_postgresql_s_lock_or_statement_timeout_is_a_503_and_the_retry_records_once(
        runtime: Runtime, database_url: str, gql: GraphQLClient, org: Org, guard: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's lock_timeout and statement_timeout")
    account_id = await funded_account(gql)
    # As a deployment that sets either on its role or database (a common guard in production)
    guarded = bootstrap(runtime.settings, engine=create_engine(
        database_url, connect_args={"server_settings": {guard: "500ms"}}))

    async with client_of(guarded, org.usage_writer) as writer:
        await holding(database_url, "SELECT id FROM accounts FOR UPDATE",
                      lambda: writer.post(RECORD, {"id": account_id, "key": "call-1"}), assert_unavailable)
        assert await balance(gql, account_id) == "10.00"
        retried = await writer(RECORD, {"id": account_id, "key": "call-1"})
    assert retried["recordUsage"]["transaction"]["balanceAfter"]["amount"] == "9.00"
    assert await balance(gql, account_id) == "9.00"


async def test_a_read_only_postgresql_serves_reads_refuses_writes_with_a_503_and_is_not_ready(
        runtime: Runtime, database_url: str, gql: GraphQLClient, org: Org) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's default_transaction_read_only")
    account_id = await funded_account(gql)
    # As a demoted primary after a failover, or a standby: every transaction read-only
    read_only = bootstrap(runtime.settings, engine=create_engine(
        database_url, connect_args={"server_settings": {"default_transaction_read_only": "on"}}))
    async with client_of(read_only, org.usage_writer) as writer:  # a key never used: its first use is recorded
        assert (await writer(BALANCE, {"id": account_id}))["account"]["balance"]["available"]["amount"] == "10.00"
        assert_unavailable(await writer.post(RECORD, {"id": account_id, "key": "call-1"}))
        ready = await writer.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "read-only"
    assert await balance(gql, account_id) == "10.00"
    retried = await gql(RECORD, {"id": account_id, "key": "call-1"}, key=org.usage_writer)  # on the primary again
    assert retried["recordUsage"]["transaction"]["balanceAfter"]["amount"] == "9.00"


async def holding(url: str, lock: str, work: Callable[[], Awaitable[httpx.Response]],
                  check: Callable[[httpx.Response], None]) -> None:
    """Runs `work` while another session holds the locks `lock` takes; checks its answer, then lets them go."""
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with admin.transaction():
            await admin.execute(lock)
            check(await asyncio.wait_for(work(), 20))
    finally:
        await admin.close()


async def test_sqlite_s_write_lock_held_by_another_program_past_the_busy_timeout_is_a_503_and_the_retry_records_once(
        database_url: str, runtime: Runtime, gql: GraphQLClient, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's busy timeout")
    account_id = await funded_account(gql)
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)  # 30 s in production
    impatient = bootstrap(runtime.settings)
    other_program = sqlite3.connect(database_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    async with client_of(impatient, org.usage_writer) as writer:
        other_program.execute("BEGIN IMMEDIATE")  # as the sqlite3 shell, or a VACUUM, would
        try:
            assert_unavailable(await writer.post(RECORD, {"id": account_id, "key": "call-1"}))
        finally:
            other_program.execute("ROLLBACK")
            other_program.close()
        retried = await writer(RECORD, {"id": account_id, "key": "call-1"})
    assert retried["recordUsage"]["transaction"]["balanceAfter"]["amount"] == "9.00"
    assert await balance(gql, account_id) == "9.00"


async def test_a_full_sqlite_disk_is_a_503_to_retry_and_records_nothing(
        database_url: str, runtime: Runtime, gql: GraphQLClient, org: Org) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's disk full (PostgreSQL's is SQLSTATE class 53)")
    account_id = await funded_account(gql)
    engine = create_engine(database_url)

    @event.listens_for(engine.sync_engine, "connect")
    def no_room_to_grow(dbapi_connection: Any, _record: Any) -> None:
        # The database may not grow by a page: as a disk with no space left (SQLITE_FULL)
        dbapi_connection.on_thread(lambda connection: connection.execute("PRAGMA max_page_count = 1"))

    full = bootstrap(runtime.settings, engine=engine)
    items = [{"accountId": account_id, "service": "TOLL_FREE", "amount": "0.000001", "idempotencyKey": f"k{n}",
              "reference": "r" * 200} for n in range(1000)]
    async with client_of(full, org.usage_writer) as writer:
        assert_unavailable(await writer.post(BATCH, {"in": {"items": items}}))
    assert await balance(gql, account_id) == "10.00"
    recorded = await gql(BATCH, {"in": {"items": items}}, key=org.usage_writer)  # room again: the retry records
    assert len(recorded["recordUsageBatch"]["results"]) == 1000


async def test_sqlite_writers_waiting_in_line_in_one_process_wait_one_busy_timeout_not_one_each(
        database_url: str, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind another program's write lock, the k-th writer in this process's line waited k busy timeouts (90 s and
    more for a request) before its 503."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's one writer at a time")
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)  # 30 s in production
    deps = runtime.deps
    holding, release = asyncio.Event(), asyncio.Event()

    async def a_long_write() -> None:  # as a writer stuck in SQLite's busy handler: the line waits behind it
        async with deps.uow(write=True):
            holding.set()
            await release.wait()

    async def a_write_behind_it() -> None:
        async with asyncio.timeout(10), deps.uow(write=True):  # the timeout: rather than wait for the first for good
            pass

    first = asyncio.create_task(a_long_write())
    await holding.wait()
    try:
        with pytest.raises(StoreUnavailable, match="writers waited past the busy timeout"):
            await a_write_behind_it()
    finally:
        release.set()
        await first
