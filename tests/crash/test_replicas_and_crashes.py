"""Three API replicas and two recharge workers on one PostgreSQL database under concurrent load, with
workers killed at the worst moments: the money stays exact.

Run with -s to see the figures (requests, entries, recharges, most PENDING attempts seen per account)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.crash.conftest import (
    LEASE_SECONDS,
    assert_balances_are_sums,
    asyncpg_dsn,
    crash_env,
    start_servers,
    start_worker,
    wait_for,
)
from tests.e2e.conftest import (
    ADD_FUNDS,
    RECORD_USAGE,
    Api,
    Launcher,
    create_org_and_key,
    funded_account_with_auto_recharge,
    migrated,
)

pytestmark = pytest.mark.slow

ACCOUNTS = 6
USAGE_KEYS = 240  # recordUsage requests, spread over the accounts and the replicas
USAGE_DUPLICATES = 30  # of those keys sent again, at the same time, to another replica
FUNDS_KEYS = 30  # addFunds requests, each retried on another replica once the first answered
SETTLE_WITHIN = LEASE_SECONDS + 20


@dataclass
class Figures:
    requests: int = 0
    answered: int = 0
    usage_recorded: int = 0
    usage_refused: int = 0
    funds_added: int = 0
    replays_checked: int = 0
    pending_samples: int = 0
    max_pending_per_account: int = 0
    notes: list[str] = field(default_factory=list)

    def count(self) -> None:
        self.requests += 1


async def _sample_pending(dsn: str, figures: Figures, stop: asyncio.Event) -> None:
    """Watches, the whole run long, the most PENDING attempts any one account has."""
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            most = await connection.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM recharge_attempts "
                "WHERE status = 'PENDING' GROUP BY account_id) AS per_account")
            figures.pending_samples += 1
            figures.max_pending_per_account = max(figures.max_pending_per_account, most)
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


async def _record_usage(apis: list[Api], figures: Figures, n: int, account_ids: list[str]) -> dict[str, Any]:
    account_id = account_ids[n % len(account_ids)]
    variables = {"id": account_id, "amount": "5.00", "key": f"call-{n}"}
    if n < USAGE_DUPLICATES:  # the same call reported twice at once, to two replicas
        bodies = await asyncio.gather(*(_post(api, figures, RECORD_USAGE, variables)
                                        for api in (apis[n % 3], apis[(n + 1) % 3])))
        first, second = (body["recordUsage"] for body in bodies)
        # A refusal does not use the key up, so a later copy may succeed; two successes are one entry.
        if first["transaction"] and second["transaction"]:
            assert first["transaction"] == second["transaction"], f"call-{n} recorded twice: {first} / {second}"
            figures.replays_checked += 1
        result: dict[str, Any] = first if first["transaction"] else second
    else:
        result = (await _post(apis[n % 3], figures, RECORD_USAGE, variables))["recordUsage"]
    if result["transaction"]:
        figures.usage_recorded += 1
    else:
        assert [error["code"] for error in result["userErrors"]] == ["INSUFFICIENT_FUNDS"], result
        figures.usage_refused += 1
    return result


async def _add_funds_with_retry(apis: list[Api], figures: Figures, n: int, account_ids: list[str]) -> None:
    """A client that retries on another replica (as after a timeout) must get the first result back."""
    variables = {"id": account_ids[n % len(account_ids)], "amount": "10.00", "key": f"invoice-{n}"}
    first = (await _post(apis[n % 3], figures, ADD_FUNDS, variables))["addFunds"]
    retried = (await _post(apis[(n + 1) % 3], figures, ADD_FUNDS, variables))["addFunds"]
    assert first["userErrors"] == [], first
    assert retried == first, f"invoice-{n}: the retry on another replica answered {retried}, first {first}"
    figures.funds_added += 1
    figures.replays_checked += 1


async def _post(api: Api, figures: Figures, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    figures.count()
    response = await api.post(document, variables)
    figures.answered += 1
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def _kill_when(progress: asyncio.Event, worker: Any, dsn: str, figures: Figures) -> None:
    """SIGKILLs `worker` a third of the way through the load, once the workers are recharging."""
    await progress.wait()
    await wait_for(lambda: _settled_count(dsn), "a first recharge settled", 15)
    answered = figures.answered
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait()
    connection = await asyncpg.connect(dsn)
    try:
        leased = await connection.fetch("SELECT id FROM recharge_attempts WHERE status = 'PENDING' "
                                        "AND lease_expires_at > now()")
        settled = await connection.fetchval("SELECT count(*) FROM recharge_attempts WHERE status = 'SUCCEEDED'")
    finally:
        await connection.close()
    figures.notes.append(f"worker-1 SIGKILLed after {answered} requests were answered and {settled} recharges "
                         f"settled; attempts under a live lease then: {[row['id'] for row in leased]}")


async def _settled_count(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM recharge_attempts WHERE status = 'SUCCEEDED'"))
    finally:
        await connection.close()


def _journal(path: Path) -> list[tuple[str, int, str | None]]:
    """The sandbox gateway's charges: (idempotency key, succeeded, charge id)."""
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT idempotency_key, succeeded, charge_id FROM sandbox_charges").fetchall()


async def _assert_money_is_exact(dsn: str, journal: Path) -> dict[str, int]:
    await assert_balances_are_sums(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        succeeded = await connection.fetch("""
            SELECT r.id, r.amount_micros, count(e.id) AS entries, min(e.amount_micros) AS credited
            FROM recharge_attempts r LEFT JOIN ledger_entries e
              ON e.id = r.transaction_id AND e.kind = 'AUTO_RECHARGE' AND e.account_id = r.account_id
            WHERE r.status = 'SUCCEEDED' GROUP BY r.id, r.amount_micros""")
        assert all(row["entries"] == 1 and row["credited"] == row["amount_micros"] for row in succeeded), succeeded
        auto_entries = await connection.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'AUTO_RECHARGE'")
        assert auto_entries == len(succeeded), "an AUTO_RECHARGE entry without its SUCCEEDED attempt"
        pending = await connection.fetchval("SELECT count(*) FROM recharge_attempts WHERE status = 'PENDING'")
        assert pending == 0
        funds_entries = await connection.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'FUNDS_ADDED'")
        index = await connection.fetchval("SELECT indexdef FROM pg_indexes "
                                          "WHERE indexname = 'uq_recharge_attempts_one_pending'")
        figures = {
            "entries": await connection.fetchval("SELECT count(*) FROM ledger_entries"),
            "accounts": await connection.fetchval("SELECT count(*) FROM accounts"),
            "recharges_succeeded": len(succeeded),
            "funds_entries": funds_entries,
        }
    finally:
        await connection.close()
    assert "UNIQUE" in index
    assert "WHERE" in index
    assert "PENDING" in index
    # Every card charge the gateway made was credited exactly once, and nothing was credited uncharged.
    charges = _journal(journal)
    assert all(succeeded_flag for _, succeeded_flag, _ in charges)
    recharge_keys = sorted(key for key, _, _ in charges if key.startswith("recharge:"))
    assert recharge_keys == sorted(f"recharge:{row['id']}" for row in succeeded)
    assert sum(1 for key, _, _ in charges if key.startswith("funds:")) == funds_entries
    figures["gateway_charges"] = len(charges)
    return figures


async def test_replicas_and_workers_keep_money_exact_when_workers_are_killed(
        tmp_path: Path, postgres_url: str, launch: Launcher) -> None:
    started = time.monotonic()
    url = migrated(postgres_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    dsn, journal = asyncpg_dsn(url), tmp_path / "gateway-journal.db"
    env = crash_env(url, journal)
    servers = start_servers(launch, env, 3)
    workers = [start_worker(launch, env, f"worker-{n}") for n in (1, 2)]
    figures = Figures()

    limits = httpx.Limits(max_connections=90)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        apis = [Api(_Routed(client, server.base_url), key) for server in servers]  # type: ignore[arg-type]
        account_ids = [await funded_account_with_auto_recharge(apis[n % 3], funds="100", recharge_amount="30",
                                                               trigger="20") for n in range(ACCOUNTS)]

        # Phase 1: load over the three replicas; worker-1 is SIGKILLed a third of the way through.
        stop_sampling, a_third_done = asyncio.Event(), asyncio.Event()
        sampler = asyncio.create_task(_sample_pending(dsn, figures, stop_sampling))
        killer = asyncio.create_task(_kill_when(a_third_done, workers[0], dsn, figures))
        total = USAGE_KEYS + USAGE_DUPLICATES + 2 * FUNDS_KEYS

        async def tracked(job: Any) -> None:
            await job
            if figures.answered >= total // 3:
                a_third_done.set()

        jobs = [tracked(_record_usage(apis, figures, n, account_ids)) for n in range(USAGE_KEYS)]
        jobs += [tracked(_add_funds_with_retry(apis, figures, n, account_ids)) for n in range(FUNDS_KEYS)]
        order = list(itertools.chain.from_iterable(itertools.zip_longest(jobs[:USAGE_KEYS], jobs[USAGE_KEYS:])))
        await asyncio.gather(*(job for job in order if job is not None))
        a_third_done.set()
        await killer
        assert workers[0].popen.returncode == -signal.SIGKILL

        # The surviving worker takes over whatever worker-1 held once its lease expires.
        await wait_for(lambda: _no_pending(dsn), "every recharge attempt settled by worker-2", SETTLE_WITHIN)
        stop_sampling.set()
        await sampler
        assert workers[1].terminate() == 0  # SIGTERM: an orderly stop

        # Phase 2: a worker dies between the gateway charge and its commit (the sandbox's fault hook).
        crashing = start_worker(launch, crash_env(url, journal, CREDITS_SANDBOX_CRASH_AFTER_CHARGE="1"), "worker-3")
        victim = await funded_account_with_auto_recharge(apis[0], funds="100", recharge_amount="50", trigger="20")
        usage = await _post(apis[1], figures, RECORD_USAGE, {"id": victim, "amount": "90.00", "key": "big-call"})
        assert usage["recordUsage"]["triggeredRecharge"]["status"] == "PENDING"
        await wait_for(lambda: crashing.popen.poll() is not None, "worker-3 killed by the fault hook", 15)
        assert crashing.popen.returncode == -signal.SIGKILL
        attempt_id, status, leased = await _victim_attempt(dsn)
        assert status == "PENDING"
        assert leased
        assert (f"recharge:{attempt_id}", 1) in [(k, ok) for k, ok, _ in _journal(journal)]
        figures.notes.append(f"worker-3 SIGKILLed right after the gateway charged recharge:{attempt_id}; "
                             "the attempt stayed PENDING under its lease")

        taken_over_at = time.monotonic()
        start_worker(launch, env, "worker-4")
        await wait_for(lambda: _no_pending(dsn), "worker-4 takes over the crashed attempt", SETTLE_WITHIN)
        figures.notes.append(f"worker-4 settled it {time.monotonic() - taken_over_at:.1f} s after starting "
                             f"(lease {LEASE_SECONDS} s) with the same key: credited once")
        balance = (await _post(apis[2], figures, "query($id: ID!) { balance(accountId: $id) { available { amount } } }",
                               {"id": victim}))["balance"]["available"]["amount"]
        assert balance == "60.00"

    for server in servers:
        assert server.process.terminate() == 0

    totals = await _assert_money_is_exact(dsn, journal)
    assert figures.max_pending_per_account == 1  # recharges happened, and never two at once
    print(f"\n=== crash test figures ({time.monotonic() - started:.1f} s) ===\n"
          f"requests: {figures.requests} (usage recorded {figures.usage_recorded}, refused for funds "
          f"{figures.usage_refused}; addFunds {figures.funds_added} each retried on another replica; "
          f"{figures.replays_checked} replays answered with the first result)\n"
          f"ledger entries: {totals['entries']} on {totals['accounts']} accounts, every balance = sum of entries\n"
          f"auto-recharges: {totals['recharges_succeeded']} SUCCEEDED, each with exactly one AUTO_RECHARGE entry; "
          f"gateway charges {totals['gateway_charges']}, each credited once; 0 PENDING at the end\n"
          f"max PENDING attempts per account seen: {figures.max_pending_per_account} "
          f"({figures.pending_samples} samples)\n" + "\n".join(figures.notes), flush=True)


class _Routed:
    """One shared connection pool, a base URL per replica (what Api needs of an httpx client)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client = client
        self._base_url = base_url

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self._client.post(f"{self._base_url}{path}", **kwargs)


async def _no_pending(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        return bool(await connection.fetchval("SELECT count(*) = 0 FROM recharge_attempts WHERE status = 'PENDING'"))
    finally:
        await connection.close()


async def _victim_attempt(dsn: str) -> tuple[int, str, bool]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow("SELECT id, status, lease_expires_at IS NOT NULL AS leased "
                                        "FROM recharge_attempts ORDER BY id DESC LIMIT 1")
    finally:
        await connection.close()
    return row["id"], row["status"], row["leased"]
