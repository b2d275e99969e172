"""Charges cancelled on a lookup are looked up again: one whose answer was lost, but which went through, is credited
once; others change nothing."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta

from credits_graphql.domain.funds import FundsChargeStatus
from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.money import Money
from credits_graphql.domain.recharge import AttemptStatus
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts, funds_recovery, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import CardDetails, ChargeResult
from credits_graphql.service.reconciliation import RECONCILE_EVERY, RECONCILE_WINDOW, Reconciled, reconcile_cancelled
from credits_graphql.service.worker import RechargeWorker
from tests.conftest import Clock, Org
from tests.service.support import (
    GRACE_PASSED,
    HeldGateway,
    attempts,
    charge_of,
    charge_outlasting_its_lease,
    enable_recharge,
    entries,
    fund,
    micros,
    open_account,
    recording,
    reload,
)


class FailingLookups:
    """The sandbox, whose lookups fail (an outage): charges still go through."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        return await self.inner.charge(token, amount, idempotency_key)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        raise ConnectionError("gateway unreachable")


async def _recharge_charged_after_it_was_cancelled(deps: Deps, org: Org, gateway: SandboxGateway,
                                                   clock: Clock) -> int:
    """A worker's recharge charge outlasts its lease; another worker, finding no charge, cancels the attempt as
    the account was closed; then the charge goes through and its answer is lost. Returns the account's id."""
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    slow_deps, claim, in_flight = await charge_outlasting_its_lease(
        deps, gateway, clock, lambda: accounts.close_account(deps, org.id, account.id), lose_answer=True)
    assert await in_flight is None  # no answer: the slow worker cannot tell
    assert await recharges.settle(slow_deps, claim, None) is None
    # but the card was charged: the funds, then the recharge
    assert [(str(money), result.succeeded) for _, money, result in gateway.charges] == [("10.00 SEK", True),
                                                                                         ("100.00 SEK", True)]
    [attempt] = await attempts(deps, account.id)
    assert attempt.status is AttemptStatus.FAILED
    assert (await reload(deps, account.id)).balance_micros == micros("10")
    return account.id


async def test_a_recharge_charged_after_it_was_cancelled_and_whose_answer_was_lost_is_credited_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _recharge_charged_after_it_was_cancelled(deps, org, gateway, clock)
    clock.advance(seconds=30)

    worker_deps, spy = recording(deps, gateway)
    reconciled = await reconcile_cancelled(worker_deps, since=clock() - RECONCILE_WINDOW)
    assert reconciled == Reconciled(looked_up=1, credited=1, unanswered=0)
    assert spy.calls == []  # looked up, never charged
    [attempt] = await attempts(deps, account_id)
    assert (attempt.status, attempt.failure_reason) == (AttemptStatus.SUCCEEDED, None)
    [credit] = await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])
    assert (credit.id, credit.amount_micros) == (attempt.transaction_id, micros("100"))
    assert (await reload(deps, account_id)).balance_micros == micros("110")  # closed, yet the money is the account's

    # run again, as every worker does every few minutes: nothing more is credited
    assert await reconcile_cancelled(deps, since=clock() - RECONCILE_WINDOW) == Reconciled(0, 0, 0)
    assert len(await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])) == 1


async def _recharge_cancelled_before_its_charge(deps: Deps, org: Org, gateway: SandboxGateway,
                                                clock: Clock) -> tuple[int, int]:
    """As above, but the slow worker died before its charge reached the gateway. Returns the account's and the
    attempt's ids."""
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    charged_before = len(gateway.charges)
    _, claim, in_flight = await charge_outlasting_its_lease(
        deps, gateway, clock, lambda: accounts.close_account(deps, org.id, account.id))
    in_flight.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await in_flight
    assert len(gateway.charges) == charged_before
    assert claim.attempt.id is not None
    return account.id, claim.attempt.id


async def test_cancelled_charges_that_were_never_made_are_looked_up_and_change_nothing(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id, attempt_id = await _recharge_cancelled_before_its_charge(deps, org, gateway, clock)
    worker_deps, spy = recording(deps, gateway)
    assert await reconcile_cancelled(worker_deps, since=clock() - RECONCILE_WINDOW) == Reconciled(1, 0, 0)
    assert spy.lookups == [recharges.gateway_key(attempt_id)]
    assert spy.calls == []
    [attempt] = await attempts(deps, account_id)
    assert (attempt.status, attempt.failure_reason) == (AttemptStatus.FAILED, "cancelled: account closed")
    assert (await reload(deps, account_id)).balance_micros == micros("10")
    assert await entries(deps, account_id, [EntryKind.AUTO_RECHARGE]) == []


async def test_only_the_cancellations_since_the_given_time_are_looked_up(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _recharge_charged_after_it_was_cancelled(deps, org, gateway, clock)
    clock.advance(seconds=RECONCILE_WINDOW.total_seconds() + 1)
    worker_deps, spy = recording(deps, gateway)
    assert await reconcile_cancelled(worker_deps, since=clock() - RECONCILE_WINDOW) == Reconciled(0, 0, 0)
    assert spy.lookups == []
    assert (await reload(deps, account_id)).balance_micros == micros("10")
    # an operator reconciles a longer window by hand (credits-graphql reconcile-charges --since 1d)
    assert await reconcile_cancelled(deps, since=clock() - timedelta(days=1)) == Reconciled(1, 1, 0)
    assert (await reload(deps, account_id)).balance_micros == micros("110")


async def test_a_lookup_the_gateway_does_not_answer_changes_nothing_and_is_made_again_next_time(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _recharge_charged_after_it_was_cancelled(deps, org, gateway, clock)
    outage = replace(deps, gateway=FailingLookups(gateway))
    assert await reconcile_cancelled(outage, since=clock() - RECONCILE_WINDOW) == Reconciled(1, 0, 1)
    assert (await reload(deps, account_id)).balance_micros == micros("10")
    assert await reconcile_cancelled(deps, since=clock() - RECONCILE_WINDOW) == Reconciled(1, 1, 0)
    assert (await reload(deps, account_id)).balance_micros == micros("110")


async def test_an_add_funds_charge_that_went_through_after_it_was_cancelled_and_lost_its_answer_is_credited(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    slow = HeldGateway(gateway, lose_answer=True)
    request = asyncio.create_task(fund(replace(deps, gateway=slow), org.id, account.id, "500"))
    await slow.entered.wait()  # the request's charge is in flight
    clock.advance(seconds=GRACE_PASSED)
    await accounts.close_account(deps, org.id, account.id)
    assert await funds_recovery.run_stale(deps) == 1  # looks the charge up: none yet, so it is cancelled
    slow.release.set()
    with contextlib.suppress(TimeoutError):
        await request  # the charge goes through, but the request gets a timeout
    assert [result.succeeded for _, _, result in gateway.charges] == [True]
    cancelled = await charge_of(deps, account.id, "fund-1")
    assert (cancelled.status, cancelled.failure_reason) == (FundsChargeStatus.DECLINED, "cancelled: account closed")
    assert await entries(deps, account.id) == []

    assert await reconcile_cancelled(deps, since=clock() - RECONCILE_WINDOW) == Reconciled(1, 1, 0)
    settled = await charge_of(deps, account.id, "fund-1")
    [credit] = await entries(deps, account.id)
    assert (settled.status, settled.transaction_id) == (FundsChargeStatus.SUCCEEDED, credit.id)
    assert (credit.kind, credit.amount_micros) == (EntryKind.FUNDS_ADDED, micros("500"))
    assert (await reload(deps, account.id)).balance_micros == micros("500")
    # the client's retry with its key is answered with that credit, and charges nothing more
    assert (await fund(deps, org.id, account.id, "500")).entry.id == credit.id
    assert len(gateway.charges) == 1


class LookupsHeldInPairs:
    """The sandbox, whose lookups wait until two are in flight: two workers reconciling at the same time."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.waiting = 0
        self.both = asyncio.Event()

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        return await self.inner.charge(token, amount, idempotency_key)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        self.waiting += 1
        if self.waiting == 2:
            self.both.set()
        await self.both.wait()
        return await self.inner.find_charge(idempotency_key)


async def test_two_workers_reconciling_at_once_credit_an_add_funds_charge_once_and_count_it_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id)
    slow = HeldGateway(gateway, lose_answer=True)
    request = asyncio.create_task(fund(replace(deps, gateway=slow), org.id, account.id, "500"))
    await slow.entered.wait()
    clock.advance(seconds=GRACE_PASSED)
    await accounts.close_account(deps, org.id, account.id)
    assert await funds_recovery.run_stale(deps) == 1  # no charge yet: cancelled
    slow.release.set()
    with contextlib.suppress(TimeoutError):
        await request  # the charge goes through; its answer is lost

    workers = replace(deps, gateway=LookupsHeldInPairs(gateway))
    since = clock() - RECONCILE_WINDOW
    one, other = await asyncio.gather(reconcile_cancelled(workers, since), reconcile_cancelled(workers, since))

    assert sorted([one, other], key=lambda r: r.credited) == [Reconciled(1, 0, 0), Reconciled(1, 1, 0)]
    assert [entry.amount_micros for entry in await entries(deps, account.id)] == [micros("500")]


async def test_the_worker_looks_cancelled_charges_up_on_its_first_pass_and_then_every_few_minutes(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _recharge_charged_after_it_was_cancelled(deps, org, gateway, clock)
    _, never_charged = await _recharge_cancelled_before_its_charge(deps, org, gateway, clock)
    worker_deps, spy = recording(deps, gateway)
    worker = RechargeWorker(worker_deps, poll_seconds=3600)

    await worker.run_once()
    assert (await reload(deps, account_id)).balance_micros == micros("110")
    assert len(spy.lookups) == 2
    clock.advance(seconds=RECONCILE_EVERY.total_seconds() - 1)
    await worker.run_once()
    assert len(spy.lookups) == 2  # not due yet
    clock.advance(seconds=1)
    await worker.run_once()
    assert spy.lookups[2:] == [recharges.gateway_key(never_charged)]  # the credited one is no longer cancelled
    assert spy.calls == []


async def test_a_worker_whose_clock_is_stepped_back_reconciles_at_once_not_after_the_step(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    _, never_charged = await _recharge_cancelled_before_its_charge(deps, org, gateway, clock)
    worker_deps, spy = recording(deps, gateway)
    worker = RechargeWorker(worker_deps, poll_seconds=3600)
    await worker.run_once()
    assert spy.lookups == [recharges.gateway_key(never_charged)]

    clock.advance(seconds=-2 * 3600)  # NTP corrects a clock that ran two hours ahead
    await worker.run_once()

    assert spy.lookups == [recharges.gateway_key(never_charged)] * 2


async def test_a_stopping_worker_makes_no_lookups(deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    await _recharge_cancelled_before_its_charge(deps, org, gateway, clock)
    worker_deps, spy = recording(deps, gateway)
    worker = RechargeWorker(worker_deps)
    worker.stop()  # SIGTERM: the pass in hand ends without starting anything new
    await worker.run_once()
    assert spy.lookups == []
