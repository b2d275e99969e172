"""addFunds survives a process that dies between the gateway charge and the credit: the charge is written
PENDING before the card is charged, and a client retry or the worker settles it with the same gateway key."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.funds import FundsChargeStatus
from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.money import MAX_BALANCE_MICROS, Money
from credits_graphql.domain.policy import Policy
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts, funds_recovery, ledger, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import CardDetails, ChargeResult
from credits_graphql.service.worker import RechargeWorker
from tests.conftest import Clock, Org
from tests.service.support import (
    GRACE_PASSED,
    HeldGateway,
    charge_of,
    credit_in_one_entry,
    enable_recharge,
    entries,
    fund,
    micros,
    open_account,
    recording,
    reload,
    use,
    violation,
)


class ProcessDied(Exception):
    """Stands for the process being killed: nothing of the request runs after it."""


class DyingGateway:
    """The sandbox, with the request's process dying right after the charge (or, `before_charge`, right
    before the gateway received it)."""

    def __init__(self, inner: SandboxGateway, *, before_charge: bool = False) -> None:
        self.inner = inner
        self.before_charge = before_charge

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        if not self.before_charge:
            await self.inner.charge(token, amount, idempotency_key)
        raise ProcessDied

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self.inner.find_charge(idempotency_key)


async def die_while_adding(deps: Deps, gateway: SandboxGateway, org: Org, account_id: int, amount: str,
                           key: str = "fund-1", *, before_charge: bool = False) -> None:
    dying = replace(deps, gateway=DyingGateway(gateway, before_charge=before_charge))
    with pytest.raises(ProcessDied):
        await fund(dying, org.id, account_id, amount, key=key)


async def test_a_charge_whose_request_died_is_not_credited_until_the_worker_settles_it_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    assert [result.succeeded for _, _, result in gateway.charges] == [True]
    assert (await reload(deps, account.id)).balance_micros == 0
    assert await entries(deps, account.id) == []
    assert (await charge_of(deps, account.id, "fund-1")).status is FundsChargeStatus.PENDING

    worker_deps, spy = recording(deps, gateway)
    assert await funds_recovery.run_stale(worker_deps) == 0  # still within the grace period: the request's
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(worker_deps) == 1
    assert await funds_recovery.run_stale(worker_deps) == 0

    [credit] = await entries(deps, account.id)
    assert (credit.kind, credit.amount_micros) == (EntryKind.FUNDS_ADDED, micros("50"))
    assert credit.idempotency_key == "fund-1"
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert len(gateway.charges) == 1  # the worker's call was answered with the first charge
    settled = await charge_of(deps, account.id, "fund-1")
    assert (settled.status, settled.transaction_id) == (FundsChargeStatus.SUCCEEDED, credit.id)
    assert spy.keys == [settled.gateway_key]

    again = await fund(deps, org.id, account.id, "50.00")  # the client's late retry gets the first result
    assert again.entry.id == credit.id
    assert len(gateway.charges) == 1


async def test_a_client_retry_with_the_same_key_credits_a_died_request_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    retried = await fund(deps, org.id, account.id, "50")
    assert retried.entry.amount_micros == micros("50")
    assert (await fund(deps, org.id, account.id, "50")).entry.id == retried.entry.id
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 0
    assert [entry.id for entry in await entries(deps, account.id)] == [retried.entry.id]
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert len(gateway.charges) == 1


async def test_a_request_that_died_before_reaching_the_gateway_is_charged_and_credited_by_the_worker(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "30", before_charge=True)
    assert gateway.charges == []
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 1
    assert [(e.kind, e.amount_micros) for e in await entries(deps, account.id)] == [(EntryKind.FUNDS_ADDED,
                                                                                       micros("30"))]
    assert len(gateway.charges) == 1


async def test_the_worker_and_a_client_retry_settling_the_same_charge_credit_it_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    clock.advance(seconds=GRACE_PASSED)
    claimed = await funds_recovery.claim_stale(deps)
    assert claimed is not None
    retried = await fund(deps, org.id, account.id, "50")  # the client settles while the worker holds the lease
    settled = await funds_recovery.recover(deps, claimed)
    assert settled is not None
    assert (settled.status, settled.transaction_id) == (FundsChargeStatus.SUCCEEDED, retried.entry.id)
    assert [entry.id for entry in await entries(deps, account.id)] == [retried.entry.id]
    assert len(gateway.charges) == 1


async def test_workers_and_client_retries_racing_credit_a_died_request_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    clock.advance(seconds=GRACE_PASSED)
    results = await asyncio.gather(funds_recovery.run_stale(deps), funds_recovery.run_stale(deps),
                                   fund(deps, org.id, account.id, "50"), fund(deps, org.id, account.id, "50"))
    tried, also_tried, first, second = results
    assert first.entry.id == second.entry.id
    assert tried + also_tried <= 1  # a charge leased by one worker is skipped by the other
    assert [entry.id for entry in await entries(deps, account.id)] == [first.entry.id]
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert len(gateway.charges) == 1


async def test_a_charge_leased_by_one_worker_is_not_taken_by_another_until_the_lease_runs_out(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.claim_stale(deps) is not None
    assert await funds_recovery.claim_stale(deps) is None
    clock.advance(seconds=funds_recovery.LEASE.total_seconds() + 1)  # the first worker died too
    assert await funds_recovery.run_stale(deps) == 1
    assert len(await entries(deps, account.id)) == 1
    assert len(gateway.charges) == 1


async def test_a_decline_found_by_the_worker_records_nothing_and_leaves_the_key_usable(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id, token="tok_chargeDeclined")
    await die_while_adding(deps, gateway, org, account.id, "50")
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 1
    declined = await charge_of(deps, account.id, "fund-1")
    assert (declined.status, declined.failure_reason) == (FundsChargeStatus.DECLINED, "card declined")
    assert await entries(deps, account.id) == []

    with violation(ErrorCode.PAYMENT_DECLINED):  # the same card is tried again, and declines again
        await fund(deps, org.id, account.id, "50")
    await accounts.update_payment_method(deps, org.id, account.id, "tok_visa")
    recorded = await fund(deps, org.id, account.id, "50")
    assert recorded.entry.idempotency_key == "fund-1"
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert [result.succeeded for _, _, result in gateway.charges] == [False, False, True]


async def test_another_amount_under_a_key_whose_charge_is_in_flight_is_key_reuse(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):
        await fund(deps, org.id, account.id, "60")
    assert len(gateway.charges) == 1
    assert (await fund(deps, org.id, account.id, "50")).entry.amount_micros == micros("50")


async def test_a_retry_after_the_card_changed_settles_the_charge_in_flight_on_its_own_card(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    await accounts.update_payment_method(deps, org.id, account.id, "tok_mastercard")
    await fund(deps, org.id, account.id, "50")
    assert [token for token, _, _ in gateway.charges] == ["tok_visa"]
    assert (await reload(deps, account.id)).balance_micros == micros("50")


async def test_a_gateway_error_leaves_the_charge_pending_for_the_worker(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50", before_charge=True)
    clock.advance(seconds=GRACE_PASSED)
    failing = replace(deps, gateway=DyingGateway(gateway, before_charge=True))  # the gateway is down
    assert await funds_recovery.run_stale(failing) == 1
    assert (await charge_of(deps, account.id, "fund-1")).status is FundsChargeStatus.PENDING
    clock.advance(seconds=funds_recovery.LEASE.total_seconds() + 1)
    assert await funds_recovery.run_stale(deps) == 1
    assert (await reload(deps, account.id)).balance_micros == micros("50")


async def test_concurrent_duplicates_charge_and_credit_once(deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    results = await asyncio.gather(*(ledger.add_funds(deps, org.id, ledger.AddFunds(account.id, Decimal(20), "k"))
                                     for _ in range(4)))
    assert len({result.entry.id for result in results}) == 1
    assert (await reload(deps, account.id)).balance_micros == micros("20")
    assert len(gateway.charges) == 1


async def test_a_charge_whose_key_was_taken_by_usage_meanwhile_is_still_credited_and_its_retry_answered(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100", key="first")
    await die_while_adding(deps, gateway, org, account.id, "50", key="shared")
    await use(deps, org.id, account.id, "10", key="shared")  # keys are per account, across operations
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 1
    newest = (await entries(deps, account.id))[0]
    assert (newest.kind, newest.amount_micros, newest.idempotency_key) == (EntryKind.FUNDS_ADDED, micros("50"), None)
    assert (await reload(deps, account.id)).balance_micros == micros("140")
    assert len(gateway.charges) == 2

    retried = await fund(deps, org.id, account.id, "50", key="shared")  # the client retries: its first result
    assert (retried.entry.id, retried.entry.kind) == (newest.id, EntryKind.FUNDS_ADDED)
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):
        await fund(deps, org.id, account.id, "60", key="shared")
    assert (await reload(deps, account.id)).balance_micros == micros("140")
    assert len(gateway.charges) == 2


async def test_a_retry_of_a_charge_in_flight_whose_key_usage_took_settles_it_and_is_answered_with_its_credit(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100", key="first")
    await die_while_adding(deps, gateway, org, account.id, "50", key="shared")
    await use(deps, org.id, account.id, "10", key="shared")  # keys are per account, across operations

    retried = await fund(deps, org.id, account.id, "50", key="shared")  # before any worker looked at the charge

    assert (retried.entry.kind, retried.entry.amount_micros) == (EntryKind.FUNDS_ADDED, micros("50"))
    assert (await reload(deps, account.id)).balance_micros == micros("140")
    assert len(gateway.charges) == 2  # the first funds and this charge, once
    assert (await charge_of(deps, account.id, "shared")).status is FundsChargeStatus.SUCCEEDED
    assert (await fund(deps, org.id, account.id, "50", key="shared")).entry.id == retried.entry.id


async def test_a_charge_that_never_reached_the_gateway_is_not_made_after_the_account_was_closed(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "500", before_charge=True)
    await accounts.close_account(deps, org.id, account.id)  # the admin saw the request fail, and closed the account
    with violation(ErrorCode.ACCOUNT_CLOSED):  # a client retry charges a closed account nothing either
        await fund(deps, org.id, account.id, "500")
    clock.advance(seconds=GRACE_PASSED)
    worker_deps, spy = recording(deps, gateway)
    assert await funds_recovery.run_stale(worker_deps) == 1
    assert gateway.charges == []
    assert spy.calls == []
    assert spy.lookups == [(await charge_of(deps, account.id, "fund-1")).gateway_key]
    settled = await charge_of(deps, account.id, "fund-1")
    assert (settled.status, settled.failure_reason) == (FundsChargeStatus.DECLINED, "cancelled: account closed")
    assert await entries(deps, account.id) == []
    assert await funds_recovery.run_stale(worker_deps) == 0


async def test_a_charge_that_went_through_before_the_account_was_closed_is_credited_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, account.id, "50")
    await accounts.close_account(deps, org.id, account.id)
    clock.advance(seconds=GRACE_PASSED)
    worker_deps, spy = recording(deps, gateway)
    assert await funds_recovery.run_stale(worker_deps) == 1
    assert spy.calls == []  # looked up, not charged again
    [credit] = await entries(deps, account.id)  # the card was charged: the money is the account's, closed or not
    assert (credit.kind, credit.amount_micros) == (EntryKind.FUNDS_ADDED, micros("50"))
    assert (await charge_of(deps, account.id, "fund-1")).status is FundsChargeStatus.SUCCEEDED
    assert len(gateway.charges) == 1


async def test_a_charge_that_outlasts_its_grace_is_credited_after_the_worker_cancelled_it_for_a_closed_account(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    slow = HeldGateway(gateway)
    request = asyncio.create_task(fund(replace(deps, gateway=slow), org.id, account.id, "500"))
    await slow.entered.wait()  # the request's charge is in flight
    clock.advance(seconds=GRACE_PASSED)
    await accounts.close_account(deps, org.id, account.id)
    assert await funds_recovery.run_stale(deps) == 1  # looks the charge up: none yet, so it is cancelled
    cancelled = await charge_of(deps, account.id, "fund-1")
    assert (cancelled.status, cancelled.failure_reason) == (FundsChargeStatus.DECLINED, "cancelled: account closed")
    slow.release.set()

    recorded = await request  # then the charge goes through: the client gets the credit, not PAYMENT_DECLINED
    assert (recorded.entry.kind, recorded.entry.amount_micros) == (EntryKind.FUNDS_ADDED, micros("500"))
    assert [result.succeeded for _, _, result in gateway.charges] == [True]
    settled = await charge_of(deps, account.id, "fund-1")
    assert (settled.status, settled.transaction_id) == (FundsChargeStatus.SUCCEEDED, recorded.entry.id)
    assert [entry.id for entry in await entries(deps, account.id)] == [recorded.entry.id]
    assert (await reload(deps, account.id)).balance_micros == micros("500")
    # settled again (the worker, a retry): answered with the same credit
    _, again = await ledger.settle_funds_charge(deps, cancelled, ChargeResult(succeeded=True, charge_id="ch_1"))
    assert again is not None
    assert again.entry.id == recorded.entry.id
    assert (await fund(deps, org.id, account.id, "500")).entry.id == recorded.entry.id
    assert len(await entries(deps, account.id)) == 1


async def test_a_recharge_the_worker_cannot_settle_does_not_keep_it_from_recovering_funds(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    recharging = await open_account(deps, org.id)
    await fund(deps, org.id, recharging.id, "10")
    await enable_recharge(deps, org.id, recharging.id, amount="100", trigger="20")  # a recharge is due
    funded = await open_account(deps, org.id)
    await die_while_adding(deps, gateway, org, funded.id, "50")
    clock.advance(seconds=GRACE_PASSED)

    async def cannot_settle(*args: object) -> None:
        raise RuntimeError("a row the database refuses")

    monkeypatch.setattr(recharges, "settle", cannot_settle)
    await RechargeWorker(deps).run_once()

    assert (await reload(deps, funded.id)).balance_micros == micros("50")
    assert "settle_due failed" in caplog.text


async def test_charges_in_flight_count_toward_the_most_an_account_may_hold(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    deps = replace(deps, policy=Policy(max_purchase=Decimal(10**9)))  # the largest CREDITS_MAX_PURCHASE allowed
    account = await open_account(deps, org.id, currency="VND")
    await credit_in_one_entry(deps, account.id, MAX_BALANCE_MICROS - micros("1500000000"))
    await die_while_adding(deps, gateway, org, account.id, "1000000000", key="in-flight")  # charged, not credited

    with violation(ErrorCode.INVALID_AMOUNT, ["input", "amount"]) as refused:
        await fund(deps, org.id, account.id, "1000000000", key="over-the-most")
    assert refused.value.message == ("An account may hold at most 1000000000000 VND: this would take the balance "
                                     "above it, counting 1000000000 VND of charges still being processed.")
    assert len(gateway.charges) == 1  # refused before its card was charged

    await fund(deps, org.id, account.id, "500000000", key="up-to-the-most")
    retried = await fund(deps, org.id, account.id, "1000000000", key="in-flight")  # the charge in flight, credited
    assert retried.account.balance_micros == MAX_BALANCE_MICROS
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 0
    assert (await reload(deps, account.id)).balance_micros == MAX_BALANCE_MICROS
