"""Concurrent usage through a real `serve` process, on SQLite and on PostgreSQL: the ledger stays exact,
idempotency keys replay, and one account never has more than one PENDING recharge attempt."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    Api,
    Launcher,
    all_transactions,
    cli_env,
    create_org_and_key,
    funded_account_with_auto_recharge,
    migrated,
    start_server,
    usage_with_retries,
)

pytestmark = pytest.mark.slow

KEYS = 100
RETRIES = 20
USAGE = Decimal("1.50")
FUNDS = Decimal(100)

async def test_concurrent_usage_keeps_the_ledger_exact_and_creates_one_pending_recharge(
        tmp_path: Path, any_database_url: str, launch: Launcher) -> None:
    url = migrated(any_database_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    server = start_server(launch, cli_env(url, CREDITS_WORKER="external"))  # no worker: recharges stay PENDING
    limits = httpx.Limits(max_connections=KEYS + RETRIES)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        api = Api(client, key)
        account_id = await funded_account_with_auto_recharge(api, funds=str(FUNDS), recharge_amount="50",
                                                             trigger="20")
        outcomes = await usage_with_retries(api, account_id, keys=KEYS, retries=RETRIES, amount=str(USAGE))

        succeeded, refused = set(), set()
        for k, results in outcomes.items():
            ids = {r["transaction"]["id"] for r in results if r["transaction"]}
            errors = [error["code"] for r in results for error in r["userErrors"]]
            assert len(ids) <= 1, f"{k} moved money more than once: {results}"
            if ids:
                succeeded.add(k)
                assert errors == [], f"{k} both succeeded and failed: {results}"
            else:
                refused.add(k)
                assert errors == ["INSUFFICIENT_FUNDS"] * len(results), results
        assert len(succeeded) + len(refused) == KEYS
        # 66 x 1.50 = 99.00 fits in 100; a refusal only happens once fewer than 1.50 are left.
        assert len(succeeded) == int(FUNDS // USAGE)
        retried = {k for k, results in outcomes.items() if len(results) > 1}
        assert len(retried) == RETRIES

        account, entries = await all_transactions(api, account_id)
        balance = Decimal(account["balance"]["available"]["amount"])
        assert balance == FUNDS - USAGE * len(succeeded)
        assert len(entries) == account["transactions"]["totalCount"] == 1 + len(succeeded)
        assert len({entry["id"] for entry in entries}) == len(entries)
        assert sum(Decimal(entry["amount"]["amount"]) for entry in entries) == balance
        assert Decimal(entries[0]["balanceAfter"]["amount"]) == balance
        recorded = {r["transaction"]["id"] for results in outcomes.values() for r in results if r["transaction"]}
        assert recorded == {entry["id"] for entry in entries if entry["kind"] == "USAGE"}

        attempts = [edge["node"] for edge in account["rechargeAttempts"]["edges"]]
        assert [attempt["status"] for attempt in attempts] == ["PENDING"]
        assert account["balance"]["pendingRecharge"] == {"id": attempts[0]["id"]}
        triggered = [r["triggeredRecharge"] for results in outcomes.values() for r in results
                     if r["triggeredRecharge"]]
        assert {t["id"] for t in triggered} == {attempts[0]["id"]}
