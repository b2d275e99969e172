"""A `serve` process SIGKILLed while usage reports sent together are in flight, in transactions they share
(service/usage_combiner.py): none is recorded twice or half, and once the client retries each with its key on a
new process, each is recorded exactly once. Run with -s to see how many were answered and recorded before the
kill."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.crash.conftest import start_servers
from tests.e2e.conftest import (
    ADD_FUNDS,
    CREATE_ACCOUNT,
    RECORD_USAGE,
    Api,
    Launcher,
    all_transactions,
    cli_env,
    create_org_and_key,
    migrated,
)

pytestmark = pytest.mark.slow

REPORTS = 200
KILL_AFTER = 25  # answers: by then the rest are queued, in a shared transaction, or not yet read


async def test_usage_reports_cut_off_by_a_killed_server_are_recorded_once_after_retries(
        tmp_path: Path, any_database_url: str, launch: Launcher) -> None:
    url = migrated(any_database_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    env = cli_env(url)
    [victim] = start_servers(launch, env, 1)
    answered: dict[str, str] = {}  # idempotency key -> the transaction id it was answered with

    async with httpx.AsyncClient(base_url=victim.base_url, timeout=30) as client:
        api = Api(client, key)
        created = await api(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": "SEK",
                                                       "paymentMethod": {"token": "tok_visa"}}})
        account_id = created["createAccount"]["account"]["id"]
        funded = await api(ADD_FUNDS, {"id": account_id, "amount": "1000", "key": "funds"})
        assert funded["addFunds"]["userErrors"] == []

        async def report(n: int) -> None:
            try:
                response = await api.post(RECORD_USAGE, {"id": account_id, "amount": "1.00", "key": f"call-{n}"})
            except httpx.TransportError:
                return  # cut off with the server
            body = response.json()
            assert response.status_code == 200, body
            assert body["data"]["recordUsage"]["userErrors"] == [], body
            answered[f"call-{n}"] = body["data"]["recordUsage"]["transaction"]["id"]
            if len(answered) == KILL_AFTER:
                victim.process.popen.send_signal(signal.SIGKILL)

        await asyncio.gather(*(report(n) for n in range(REPORTS)))
    victim.process.popen.wait(timeout=10)
    assert victim.process.popen.returncode == -signal.SIGKILL
    assert KILL_AFTER <= len(answered) < REPORTS  # some were cut off

    [server] = start_servers(launch, env, 1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        api = Api(client, key)
        before, entries = await all_transactions(api, account_id)
        usage = [entry for entry in entries if entry["kind"] == "USAGE"]
        # What was cut off is all or nothing: every entry is a whole report, and the ledger adds up.
        print(f"\n{len(answered)} of {REPORTS} reports answered before the kill, {len(usage)} recorded")
        assert len(answered) <= len(usage) <= REPORTS
        assert all(entry["amount"]["amount"] == "-1.00" for entry in usage)
        assert Decimal(before["balance"]["available"]["amount"]) == sum(
            Decimal(entry["amount"]["amount"]) for entry in entries)

        retried = await asyncio.gather(*(api(RECORD_USAGE, {"id": account_id, "amount": "1.00", "key": f"call-{n}"})
                                         for n in range(REPORTS)))
        ids = {f"call-{n}": done["recordUsage"]["transaction"]["id"] for n, done in enumerate(retried)}
        assert all(done["recordUsage"]["userErrors"] == [] for done in retried)
        # A report answered before the kill is answered again with the same entry; each key has one entry.
        assert {k: ids[k] for k in answered} == answered
        assert len(set(ids.values())) == REPORTS
        after, entries = await all_transactions(api, account_id)
        assert [entry["kind"] for entry in entries].count("USAGE") == REPORTS
        assert after["balance"]["available"]["amount"] == "800.00"
        assert entries[0]["balanceAfter"]["amount"] == "800.00"

