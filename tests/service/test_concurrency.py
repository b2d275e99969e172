"""Concurrent callers on one account: the balance never goes below zero, nothing is double-counted,
and there is never more than one PENDING recharge attempt."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.ledger import CreditService, EntryKind
from credits_graphql.domain.recharge import AttemptStatus
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import ledger, recharges
from credits_graphql.service.deps import Deps
from tests.conftest import Org
from tests.service.support import (
    assert_ledger_consistent,
    attempts,
    count_pending_rows,
    enable_recharge,
    entries,
    fund,
    micros,
    open_account,
    recording,
    reload,
)

CALLS = 50


async def _usage(deps: Deps, org: Org, account_id: int, amount: str, key: str) -> ledger.Recorded | RuleViolation:
    try:
        return await ledger.record_usage(deps, org.id, ledger.RecordUsage(
            account_id, CreditService.DOMESTIC_CALLING, Decimal(amount), key))
    except RuleViolation as violation:
        return violation


async def test_concurrent_usage_never_overdraws_and_creates_one_pending_recharge(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "50")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")

    results = await asyncio.gather(*(_usage(deps, org, account.id, "3", f"u{i}") for i in range(CALLS)))

    recorded = [r for r in results if isinstance(r, ledger.Recorded)]
    refused = [r for r in results if isinstance(r, RuleViolation)]
    assert len(recorded) == 16  # 50 covers 16 calls of 3; no worker runs, so no recharge arrives
    assert {r.code for r in refused} == {ErrorCode.INSUFFICIENT_FUNDS}
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == len(recorded)
    account_after = await assert_ledger_consistent(deps, account.id)
    assert account_after.balance_micros == micros("2")
    assert await count_pending_rows(deps, account.id) == 1
    triggered = [r.triggered_recharge for r in recorded if r.triggered_recharge is not None]
    assert len(triggered) == 1
    assert [a.id for a in await attempts(deps, account.id)] == [triggered[0].id]


async def test_concurrent_usage_with_the_worker_running_keeps_the_ledger_exact(deps: Deps, org: Org,
                                                                               gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "30")
    await enable_recharge(deps, org.id, account.id, amount="50", trigger="20")

    usage_answered = asyncio.Event()
    settled_so_far = [0]

    async def worker() -> int:
        """Settles due recharges while usage is reported, until every report is answered and at least one
        recharge has been settled (bounded, so a recharge that never comes fails the test below)."""
        settled = 0
        for _ in range(2000):
            if usage_answered.is_set() and settled_so_far[0]:
                break
            done = await recharges.run_due(deps)
            settled += done
            settled_so_far[0] += done
        return settled

    async def report_usage() -> list[ledger.Recorded | RuleViolation]:
        try:
            return await asyncio.gather(*(_usage(deps, org, account.id, "4", f"u{i}") for i in range(CALLS)))
        finally:
            usage_answered.set()

    usage_results, *settled_by_worker = await asyncio.gather(report_usage(), worker(), worker())
    recorded = [r for r in usage_results if isinstance(r, ledger.Recorded)]
    refused = [r for r in usage_results if isinstance(r, RuleViolation)]
    assert recorded
    assert sum(settled_by_worker) >= 1
    assert {r.code for r in refused} <= {ErrorCode.INSUFFICIENT_FUNDS}
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == len(recorded)
    credits = await entries(deps, account.id, [EntryKind.AUTO_RECHARGE])
    succeeded = [a for a in await attempts(deps, account.id) if a.status is AttemptStatus.SUCCEEDED]
    assert len(credits) == len(succeeded) == sum(settled_by_worker)
    assert sorted(a.transaction_id for a in succeeded) == sorted(c.id for c in credits)  # type: ignore[type-var]
    balance = (await assert_ledger_consistent(deps, account.id)).balance_micros
    assert balance == micros("30") + len(credits) * micros("50") - len(recorded) * micros("4")
    assert await count_pending_rows(deps, account.id) <= 1


async def test_concurrent_replays_of_one_usage_key_debit_once(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    results = await asyncio.gather(*(_usage(deps, org, account.id, "1", "same") for _ in range(20)))
    assert all(isinstance(r, ledger.Recorded) for r in results)
    assert len({r.entry.id for r in results if isinstance(r, ledger.Recorded)}) == 1
    assert (await reload(deps, account.id)).balance_micros == micros("99")


async def test_concurrent_add_funds_with_one_key_credit_and_charge_once(deps: Deps, org: Org,
                                                                        gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    spied, spy = recording(deps, gateway)
    results = await asyncio.gather(*(fund(spied, org.id, account.id, "25", key="same") for _ in range(10)))
    assert len({r.entry.id for r in results}) == 1
    assert len(await entries(deps, account.id)) == 1
    assert (await reload(deps, account.id)).balance_micros == micros("25")
    assert len(gateway.charges) == 1
    assert len(set(spy.keys)) == 1


async def test_concurrent_workers_settle_each_due_attempt_once(deps: Deps, org: Org,
                                                               gateway: SandboxGateway) -> None:
    account_ids = []
    for i in range(6):
        account = await open_account(deps, org.id, name=f"A{i}")
        await fund(deps, org.id, account.id, "10")
        await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
        account_ids.append(account.id)
    charges_before = len(gateway.charges)
    spied, spy = recording(deps, gateway)

    settled = await asyncio.gather(*(recharges.run_due(spied) for _ in range(3)))

    assert sum(settled) == 6
    assert len(spy.keys) == len(set(spy.keys)) == 6  # no attempt was charged twice
    assert len(gateway.charges) == charges_before + 6
    for account_id in account_ids:
        assert [a.status for a in await attempts(deps, account_id)] == [AttemptStatus.SUCCEEDED]
        assert len(await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])) == 1
        assert (await reload(deps, account_id)).balance_micros == micros("110")
