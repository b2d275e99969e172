"""A `serve` process SIGKILLed between the gateway's charge for addFunds and the credit's commit: the
customer paid, so a worker process credits the charge exactly once, without the client retrying."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.crash.conftest import LEASE_SECONDS, asyncpg_dsn, crash_env, start_servers, start_worker, wait_for
from tests.e2e.conftest import (
    ADD_FUNDS,
    CREATE_ACCOUNT,
    Api,
    Launcher,
    create_org_and_key,
    migrated,
)

pytestmark = pytest.mark.slow

FUNDS_ADDED = """query($id: ID!) {
  balance(accountId: $id) { available { amount } }
  account(id: $id) { transactions(kinds: [FUNDS_ADDED]) { edges { node { id amount { amount } } } } } }"""


def _funds_charges_in_journal(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT idempotency_key, succeeded FROM sandbox_charges "
                                  "WHERE idempotency_key LIKE 'funds:%'").fetchall()


async def _funds_state(dsn: str) -> tuple[list[str], list[tuple[int, str | None]]]:
    """The funds charges' statuses and the FUNDS_ADDED entries (amount, idempotency key)."""
    connection = await asyncpg.connect(dsn)
    try:
        statuses = [row["status"] for row in await connection.fetch("SELECT status FROM funds_charges ORDER BY id")]
        credits = [(row["amount_micros"], row["idempotency_key"]) for row in await connection.fetch(
            "SELECT amount_micros, idempotency_key FROM ledger_entries WHERE kind = 'FUNDS_ADDED' ORDER BY id")]
    finally:
        await connection.close()
    return statuses, credits


async def test_funds_charged_by_a_server_killed_before_the_credit_are_credited_once_by_a_worker(
        tmp_path: Path, postgres_url: str, launch: Launcher) -> None:
    url = migrated(postgres_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    dsn, journal = asyncpg_dsn(url), tmp_path / "gateway-journal.db"
    [crashing] = start_servers(launch, crash_env(url, journal, CREDITS_SANDBOX_CRASH_AFTER_CHARGE="1"), 1)
    funds = {"amount": "75.00", "key": "invoice-77"}

    async with httpx.AsyncClient(base_url=crashing.base_url, timeout=30) as client:
        api = Api(client, key)
        created = await api(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": "SEK",
                                                       "paymentMethod": {"token": "tok_visa"}}})
        account_id = created["createAccount"]["account"]["id"]
        with pytest.raises(httpx.TransportError):  # the server dies with the request: no answer
            await api.post(ADD_FUNDS, {"id": account_id, **funds})
    crashing.process.popen.wait(timeout=10)
    assert crashing.process.popen.returncode == -signal.SIGKILL
    assert [ok for _, ok in _funds_charges_in_journal(journal)] == [1]  # the card was charged
    assert await _funds_state(dsn) == (["PENDING"], [])  # and nothing was credited

    env = crash_env(url, journal)
    [server] = start_servers(launch, env, 1)
    start_worker(launch, env, "worker")  # the client never retries: the worker settles it after the grace period
    await wait_for(lambda: _settled(dsn), "the worker settles the dead request's charge", LEASE_SECONDS + 15)
    assert await _funds_state(dsn) == (["SUCCEEDED"], [(75_000_000, "invoice-77")])
    assert len(_funds_charges_in_journal(journal)) == 1  # charged once, credited once

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client, key)
        seen = await api(FUNDS_ADDED, {"id": account_id})
        assert seen["balance"]["available"]["amount"] == "75.00"
        [credit] = [edge["node"] for edge in seen["account"]["transactions"]["edges"]]
        assert credit["amount"]["amount"] == "75.00"
        retried = await api(ADD_FUNDS, {"id": account_id, **funds})  # a late retry: the first result
        assert retried["addFunds"] == {"transaction": {"id": credit["id"]}, "userErrors": []}
    assert await _funds_state(dsn) == (["SUCCEEDED"], [(75_000_000, "invoice-77")])
    assert len(_funds_charges_in_journal(journal)) == 1


async def _settled(dsn: str) -> bool:
    statuses, _ = await _funds_state(dsn)
    return statuses == ["SUCCEEDED"]
