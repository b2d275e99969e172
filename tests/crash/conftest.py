"""Real `serve` and `worker` processes on a PostgreSQL database of the test's own, with the sandbox
gateway's journal in a file they share. The process fixtures come from tests/e2e."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import (  # noqa: F401 (fixtures)
    Launcher,
    Process,
    Server,
    any_database_url,
    cli_env,
    free_port,
    launch,
    postgres_url,
    sqlite_url,
    wait_until_healthy,
)

LEASE_SECONDS = 2


def crash_env(database_url: str, journal: Path, **settings: str) -> dict[str, str]:
    """Settings for processes of one deployment: external workers, short leases, one gateway journal."""
    return cli_env(database_url, CREDITS_WORKER="external", CREDITS_RECHARGE_LEASE_SECONDS=str(LEASE_SECONDS),
                   CREDITS_SANDBOX_JOURNAL=str(journal), CREDITS_DB_POOL_SIZE="5", CREDITS_DB_MAX_OVERFLOW="5",
                   **settings)


def start_servers(launcher: Launcher, env: dict[str, str], count: int) -> list[Server]:
    """`count` serve processes started together; returns once every /healthz answers."""
    processes = []
    for _ in range(count):
        port = free_port()
        processes.append(launcher("serve", "--port", str(port), env=env, name=f"serve-{port}"))
    servers = []
    for process in processes:
        base_url = process.wait_for_stdout(r"serving (http://\S+)/graphql").group(1)
        server = Server(process, base_url, f"{base_url}/graphql")
        wait_until_healthy(server)
        servers.append(server)
    return servers


def start_worker(launcher: Launcher, env: dict[str, str], name: str) -> Process:
    worker = launcher("worker", env=env, name=name)
    worker.wait_for_stdout("recharge worker running")
    return worker


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def wait_for(condition: Callable[[], object], what: str, within: float) -> None:
    """Polls `condition` (sync or async) until it is true; fails the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def assert_balances_are_sums(dsn: str) -> None:
    """The ledger rule on every account: balance == sum of its entries == its newest entry's balanceAfter."""
    connection = await asyncpg.connect(dsn)
    try:
        drifted = await connection.fetch("""
            SELECT a.id, a.balance_micros, coalesce(sum(e.amount_micros), 0) AS total,
                   (SELECT balance_after_micros FROM ledger_entries WHERE account_id = a.id ORDER BY id DESC LIMIT 1)
                       AS newest
            FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
            GROUP BY a.id HAVING a.balance_micros <> coalesce(sum(e.amount_micros), 0)
                OR a.balance_micros <> (SELECT balance_after_micros FROM ledger_entries
                                        WHERE account_id = a.id ORDER BY id DESC LIMIT 1)""")
    finally:
        await connection.close()
    assert drifted == [], f"balance is not the sum of the ledger: {drifted}"
