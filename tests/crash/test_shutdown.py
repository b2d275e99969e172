"""SIGTERM is an orderly stop: `serve` refuses new connections, finishes the request in flight and exits 0;
a worker settles the attempt it is charging and exits 0. The in-flight work is held deterministically
on a row lock the test takes, and released after the signal."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.crash.conftest import asyncpg_dsn, crash_env, start_servers, start_worker, wait_for
from tests.e2e.conftest import (
    RECORD_USAGE,
    Api,
    Launcher,
    create_org_and_key,
    funded_account_with_auto_recharge,
    migrated,
)

pytestmark = pytest.mark.slow


async def _someone_waits_on_a_lock(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        return bool(await connection.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))
    finally:
        await connection.close()


async def _refuses_connections(base_url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"{base_url}/healthz")
    # Not accepted, or accepted as the socket closed and then dropped unanswered (seen as a protocol error, or as a
    # failed read or write, by when the close came): not served, any way.
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return True
    return False


async def test_sigterm_on_serve_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(
        tmp_path: Path, postgres_url: str, launch: Launcher) -> None:
    url = migrated(postgres_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    dsn = asyncpg_dsn(url)
    [server] = start_servers(launch, crash_env(url, tmp_path / "journal.db"), 1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client, key)
        account_id = await funded_account_with_auto_recharge(api, funds="100", recharge_amount="50", trigger="20")
        lock = await asyncpg.connect(dsn)
        try:
            transaction = lock.transaction()
            await transaction.start()
            await lock.execute("SELECT id FROM accounts FOR UPDATE")
            in_flight = asyncio.create_task(api.post(RECORD_USAGE, {"id": account_id, "amount": "7.50",
                                                                   "key": "call-in-flight"}))
            await wait_for(lambda: _someone_waits_on_a_lock(dsn), "the request blocked on the row lock", 10)

            server.process.popen.send_signal(signal.SIGTERM)
            await wait_for(lambda: _refuses_connections(server.base_url), "new connections refused", 10)
            assert server.process.popen.poll() is None  # still draining the request in flight
            await transaction.commit()
        finally:
            await lock.close()
        response = await in_flight

    assert response.status_code == 200
    assert response.json()["data"]["recordUsage"]["transaction"]["amount"]["amount"] == "-7.50"
    assert server.process.popen.wait(timeout=10) == 0
    connection = await asyncpg.connect(dsn)
    try:
        assert await connection.fetchval("SELECT balance_micros FROM accounts") == 92_500_000
    finally:
        await connection.close()


async def test_sigterm_on_a_worker_settles_the_attempt_it_is_charging_and_exits_0(
        tmp_path: Path, postgres_url: str, launch: Launcher) -> None:
    url = migrated(postgres_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    dsn = asyncpg_dsn(url)
    env = crash_env(url, tmp_path / "journal.db")
    [server] = start_servers(launch, env, 1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client, key)
        account_id = await funded_account_with_auto_recharge(api, funds="100", recharge_amount="50", trigger="20")
        usage = await api(RECORD_USAGE, {"id": account_id, "amount": "90", "key": "call-1"})
        assert usage["recordUsage"]["triggeredRecharge"]["status"] == "PENDING"

    lock = await asyncpg.connect(dsn)
    try:
        transaction = lock.transaction()
        await transaction.start()
        await lock.execute("SELECT id FROM accounts FOR UPDATE")  # the worker charges, then waits to settle
        worker = start_worker(launch, env, "worker")
        await wait_for(lambda: _someone_waits_on_a_lock(dsn), "the worker settling behind the row lock", 10)
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.poll() is None
        await transaction.commit()
    finally:
        await lock.close()

    assert worker.popen.wait(timeout=10) == 0
    connection = await asyncpg.connect(dsn)
    try:
        assert await connection.fetchval("SELECT status FROM recharge_attempts") == "SUCCEEDED"
        assert await connection.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'AUTO_RECHARGE'") == 1
        assert await connection.fetchval("SELECT balance_micros FROM accounts") == 60_000_000
    finally:
        await connection.close()
    assert server.process.terminate() == 0
