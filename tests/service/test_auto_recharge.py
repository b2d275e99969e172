"""Auto-recharge: settings, the trigger, the worker's charge and settle steps, back-off and suspension."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.money import Money
from credits_graphql.domain.recharge import AttemptStatus, RechargeStatus
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import CardDetails, ChargeResult
from tests.conftest import Clock, Org, make_org
from tests.service.support import (
    attempts,
    charge_outlasting_its_lease,
    count_pending_rows,
    enable_recharge,
    entries,
    fund,
    micros,
    open_account,
    pending,
    recording,
    reload,
    use,
    violation,
)


def _settings(account_id: int, enabled: bool = True, amount: str | None = "100",
              trigger: str | None = "20") -> accounts.UpdateRechargeSettings:
    return accounts.UpdateRechargeSettings(account_id, enabled, Decimal(amount) if amount is not None else None,
                                           Decimal(trigger) if trigger is not None else None)


async def _funded(deps: Deps, org: Org, amount: str = "50", token: str = "tok_visa") -> int:
    account = await open_account(deps, org.id, token=token)
    await fund(deps, org.id, account.id, amount)
    return account.id


async def _below_the_trigger_on_a_declining_card(deps: Deps, org: Org) -> int:
    """Auto-recharge of 100 below 20 on a declining card, and usage that left 15: an attempt is pending."""
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await use(deps, org.id, account_id, "35", "u1")
    return account_id


# settings


async def test_enabling_auto_recharge_stores_the_amounts_as_active(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    settings = (await reload(deps, account_id)).recharge
    assert settings.status is RechargeStatus.ACTIVE
    assert (settings.amount_micros, settings.trigger_micros) == (micros("100"), micros("20"))
    assert await attempts(deps, account_id) == []  # 50 is not below 20


@pytest.mark.parametrize(("amount", "trigger", "field"), [
    (None, "20", "rechargeAmount"),
    ("100", None, "triggerBalance"),
    ("9.99", "5", "rechargeAmount"),
    ("100000.01", "5", "rechargeAmount"),
    ("100.001", "20", "rechargeAmount"),
    ("100", "-1", "triggerBalance"),
    ("100", "20.001", "triggerBalance"),
    ("100", "100", "triggerBalance"),
    ("100", "150", "triggerBalance"),
])
async def test_invalid_recharge_settings_are_refused_on_their_field_and_change_nothing(
        deps: Deps, org: Org, amount: str | None, trigger: str | None, field: str) -> None:
    account_id = await _funded(deps, org)
    with violation(ErrorCode.INVALID_RECHARGE_SETTINGS, ["input", field]):
        await accounts.update_recharge_settings(deps, org.id, _settings(account_id, True, amount, trigger))
    assert (await reload(deps, account_id)).recharge.status is RechargeStatus.DISABLED


async def test_enabling_without_a_payment_method_is_refused(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, token=None)
    with violation(ErrorCode.PAYMENT_METHOD_REQUIRED):
        await enable_recharge(deps, org.id, account.id)
    assert (await reload(deps, account.id)).recharge.status is RechargeStatus.DISABLED


async def test_settings_on_a_closed_or_foreign_account_are_refused(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await accounts.close_account(deps, org.id, account_id)
    with violation(ErrorCode.ACCOUNT_CLOSED):
        await enable_recharge(deps, org.id, account_id)
    theirs = await open_account(deps, (await make_org(deps, "Other")).id)
    with violation(ErrorCode.ACCOUNT_NOT_FOUND):
        await enable_recharge(deps, org.id, theirs.id)
    assert (await reload(deps, theirs.id)).recharge.status is RechargeStatus.DISABLED


async def test_disabling_keeps_the_last_amounts_for_display(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
    settings = (await reload(deps, account_id)).recharge
    assert settings.status is RechargeStatus.DISABLED
    assert (settings.amount_micros, settings.trigger_micros) == (micros("100"), micros("20"))


async def test_saving_settings_below_the_trigger_creates_a_pending_attempt_at_once(deps: Deps, org: Org,
                                                                                  clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    attempt = await pending(deps, account_id)
    assert attempt is not None
    assert attempt.amount_micros == micros("100")
    assert attempt.not_before.replace(tzinfo=clock.now.tzinfo) <= clock.now
    assert await count_pending_rows(deps, account_id) == 1
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")  # saving again: still one
    assert await count_pending_rows(deps, account_id) == 1


# the trigger and the worker


async def test_usage_crossing_the_trigger_creates_exactly_one_pending_attempt(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    above = await use(deps, org.id, account_id, "30", "u1")  # 20 left: not strictly below the trigger
    assert above.triggered_recharge is None
    crossing = await use(deps, org.id, account_id, "5", "u2")
    assert crossing.triggered_recharge is not None
    assert crossing.triggered_recharge.status is AttemptStatus.PENDING
    assert crossing.triggered_recharge.triggered_by_entry_id == crossing.entry.id
    assert crossing.triggered_recharge.amount_micros == micros("100")
    later = await use(deps, org.id, account_id, "5", "u3")
    assert later.triggered_recharge is None
    assert [a.id for a in await attempts(deps, account_id)] == [crossing.triggered_recharge.id]


async def test_the_worker_charges_a_due_attempt_and_credits_one_auto_recharge(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    attempt = (await use(deps, org.id, account_id, "35", "u1")).triggered_recharge
    assert attempt is not None
    worker_deps, spy = recording(deps, gateway)
    assert await recharges.run_due(worker_deps) == 1
    assert spy.keys == [f"recharge:{attempt.id}"]
    token, money, _ = spy.calls[0]
    assert (token, money.micros, money.currency) == ("tok_visa", micros("100"), "SEK")
    assert len(gateway.charges) == 2  # the funds added by hand, and this recharge
    settled = (await attempts(deps, account_id))[0]
    assert settled.id == attempt.id
    assert settled.status is AttemptStatus.SUCCEEDED
    credits = await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])
    assert len(credits) == 1
    assert settled.transaction_id == credits[0].id
    assert credits[0].amount_micros == micros("100")
    assert (await reload(deps, account_id)).balance_micros == micros("115")
    assert await pending(deps, account_id) is None
    assert await recharges.run_due(worker_deps) == 0
    assert len(spy.calls) == 1


async def test_a_recharge_started_on_a_host_whose_clock_runs_ahead_is_charged_by_the_worker_at_once(
        deps: Deps, org: Org, clock: Clock) -> None:
    api_host = replace(deps, clock=lambda: clock.now + timedelta(minutes=10))
    account_id = await _funded(deps, org, "50")
    await enable_recharge(api_host, org.id, account_id, amount="100", trigger="20")
    await use(api_host, org.id, account_id, "35", "u1")  # 15 left: below the trigger

    assert await recharges.run_due(deps) == 1  # the worker's clock is right: not ten minutes later
    assert (await reload(deps, account_id)).balance_micros == micros("115")


async def test_a_new_card_saved_on_a_host_whose_clock_runs_ahead_makes_the_waiting_retry_due_at_once(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _below_the_trigger_on_a_declining_card(deps, org)
    assert await recharges.run_due(deps) == 1  # declined: a retry waits 60 s

    api_host = replace(deps, clock=lambda: clock.now + timedelta(minutes=10))
    await accounts.update_payment_method(api_host, org.id, account_id, "tok_visa")

    assert await recharges.run_due(deps) == 1
    assert (await reload(deps, account_id)).balance_micros == micros("115")


async def test_a_declined_recharge_fails_and_schedules_a_retry_after_the_back_off(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _below_the_trigger_on_a_declining_card(deps, org)
    assert await recharges.run_due(deps) == 1
    retry, failed = await attempts(deps, account_id)
    assert failed.status is AttemptStatus.FAILED
    assert failed.failure_reason is not None
    assert "declined" in failed.failure_reason
    assert retry.status is AttemptStatus.PENDING
    assert retry.not_before.replace(tzinfo=clock.now.tzinfo) == clock.now + timedelta(seconds=60)
    assert (await reload(deps, account_id)).recharge.consecutive_failures == 1
    assert await entries(deps, account_id, [EntryKind.AUTO_RECHARGE]) == []
    # The waiting retry keeps usage from creating another attempt.
    assert (await use(deps, org.id, account_id, "1", "u2")).triggered_recharge is None
    assert await count_pending_rows(deps, account_id) == 1


async def test_three_declined_recharges_back_off_then_suspend_and_a_new_card_resumes(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    account_id = await _below_the_trigger_on_a_declining_card(deps, org)

    assert await recharges.run_due(deps) == 1  # 1st failure
    assert await recharges.run_due(deps) == 0  # the back-off has not passed
    clock.advance(seconds=59)
    assert await recharges.run_due(deps) == 0
    clock.advance(seconds=2)
    assert await recharges.run_due(deps) == 1  # 2nd failure
    second_retry = await pending(deps, account_id)
    assert second_retry is not None
    assert second_retry.not_before.replace(tzinfo=clock.now.tzinfo) == clock.now + timedelta(seconds=600)
    clock.advance(seconds=599)
    assert await recharges.run_due(deps) == 0
    clock.advance(seconds=2)
    assert await recharges.run_due(deps) == 1  # 3rd failure: no next attempt

    account = await reload(deps, account_id)
    assert account.recharge.status is RechargeStatus.SUSPENDED
    assert await pending(deps, account_id) is None
    assert [a.status for a in await attempts(deps, account_id)] == [AttemptStatus.FAILED] * 3
    assert (await use(deps, org.id, account_id, "1", "u2")).triggered_recharge is None  # suspended: no new one
    assert await pending(deps, account_id) is None

    await accounts.update_payment_method(deps, org.id, account_id, "tok_visa")
    account = await reload(deps, account_id)
    assert account.recharge.status is RechargeStatus.ACTIVE
    assert account.recharge.consecutive_failures == 0
    assert await pending(deps, account_id) is not None  # the balance (14) is below the trigger
    assert await recharges.run_due(deps) == 1
    assert (await attempts(deps, account_id))[0].status is AttemptStatus.SUCCEEDED
    assert (await reload(deps, account_id)).balance_micros == micros("114")
    assert [result.succeeded for _, _, result in gateway.charges] == [True, False, False, False, True]


async def test_saving_settings_lifts_a_suspension(deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id)
    for _ in range(3):
        await recharges.run_due(deps)
        clock.advance(seconds=601)
    assert (await reload(deps, account_id)).recharge.status is RechargeStatus.SUSPENDED
    await enable_recharge(deps, org.id, account_id)
    assert (await reload(deps, account_id)).recharge.status is RechargeStatus.ACTIVE
    assert await pending(deps, account_id) is not None


async def test_a_new_card_makes_a_waiting_retry_due_at_once(deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id)
    assert await recharges.run_due(deps) == 1
    await accounts.update_payment_method(deps, org.id, account_id, "tok_visa")
    assert await recharges.run_due(deps) == 1
    assert (await reload(deps, account_id)).balance_micros == micros("110")
    assert len(await attempts(deps, account_id)) == 2


async def test_disabling_auto_recharge_cancels_an_idle_pending_attempt(deps: Deps, org: Org,
                                                                       gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    charges_before = len(gateway.charges)
    await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
    [cancelled] = await attempts(deps, account_id)
    assert cancelled.status is AttemptStatus.FAILED
    assert cancelled.failure_reason is not None
    assert cancelled.failure_reason.startswith("cancelled")
    assert await recharges.run_due(deps) == 0
    assert len(gateway.charges) == charges_before
    assert (await reload(deps, account_id)).balance_micros == micros("10")


async def test_closing_the_account_cancels_an_idle_pending_attempt(deps: Deps, org: Org,
                                                                   gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    charges_before = len(gateway.charges)
    await accounts.close_account(deps, org.id, account_id)
    [cancelled] = await attempts(deps, account_id)
    assert cancelled.status is AttemptStatus.FAILED
    assert cancelled.failure_reason is not None
    assert cancelled.failure_reason.startswith("cancelled")
    assert await recharges.run_due(deps) == 0
    assert len(gateway.charges) == charges_before


async def test_closing_the_account_turns_auto_recharge_off_and_keeps_its_amounts(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id, amount="50", trigger="20")
    await accounts.close_account(deps, org.id, account_id)
    settings = (await reload(deps, account_id)).recharge
    assert settings.status is RechargeStatus.DISABLED  # ACTIVE would say it still triggers
    assert (settings.amount_micros, settings.trigger_micros) == (micros("50"), micros("20"))
    assert not settings.is_due(micros("10"))


async def test_an_attempt_whose_lease_expired_is_taken_over_and_charged_once(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    charges_before = len(gateway.charges)
    deps, spy = recording(deps, gateway)

    first = await recharges.claim_next(deps)
    assert first is not None
    assert await recharges.claim_next(deps) is None  # leased to the first worker
    clock.advance(seconds=61)
    second = await recharges.claim_next(deps)
    assert second is not None
    assert second.attempt.id == first.attempt.id

    second_result = await recharges.charge(deps, second)
    first_result = await recharges.charge(deps, first)
    assert first_result == second_result
    outcomes = [await recharges.settle(deps, second, second_result), await recharges.settle(deps, first, first_result)]
    assert outcomes[0] is not None
    assert outcomes[0].status is AttemptStatus.SUCCEEDED
    assert outcomes[1] is None  # already settled by the other worker

    assert spy.keys == [f"recharge:{first.attempt.id}"] * 2  # both workers called with the same key
    assert len(await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])) == 1
    assert len(gateway.charges) == charges_before + 1  # the card was charged once
    assert (await reload(deps, account_id)).balance_micros == micros("110")


async def test_a_claimed_attempt_is_credited_even_if_auto_recharge_is_disabled_meanwhile(
        deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    claim = await recharges.claim_next(deps)
    assert claim is not None
    await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
    assert await count_pending_rows(deps, account_id) == 1  # leased: not cancelled
    await recharges.settle(deps, claim, await recharges.charge(deps, claim))
    assert [a.status for a in await attempts(deps, account_id)] == [AttemptStatus.SUCCEEDED]
    assert (await reload(deps, account_id)).balance_micros == micros("110")


async def test_the_worker_cancels_an_attempt_it_may_no_longer_charge(deps: Deps, org: Org,
                                                                     gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id)
    await recharges.run_due(deps)  # fails; a retry waits 60 s
    await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
    clock.advance(seconds=61)
    charges_before = len(gateway.charges)
    assert await recharges.run_due(deps) == 0
    assert len(gateway.charges) == charges_before
    assert await pending(deps, account_id) is None


class WordyDeclines:
    """The sandbox, but every charge is declined with a message longer than any column holds."""

    REASON = "Your card was declined: " + "do not honor, " * 30

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        return ChargeResult(succeeded=False, failure_reason=self.REASON)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return None


async def test_a_decline_with_a_long_message_fails_the_attempt_and_schedules_the_next(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    assert await recharges.run_due(replace(deps, gateway=WordyDeclines(gateway))) == 1
    waiting, failed = await attempts(deps, account_id)  # newest first
    assert failed.status is AttemptStatus.FAILED
    assert failed.failure_reason == WordyDeclines.REASON[:255]
    assert waiting.status is AttemptStatus.PENDING
    assert (await reload(deps, account_id)).recharge.consecutive_failures == 1


class Scripted:
    """The sandbox, but recharge charges are declined or go through in the order scripted (True: through)."""

    def __init__(self, inner: SandboxGateway, script: list[bool]) -> None:
        self.inner, self.script = inner, script

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        if idempotency_key.startswith("recharge:") and not self.script.pop(0):
            return ChargeResult(succeeded=False, failure_reason="card declined")
        return await self.inner.charge(token, amount, idempotency_key)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self.inner.find_charge(idempotency_key)


async def test_a_recharge_that_goes_through_starts_the_count_of_failures_afresh(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    worker = replace(deps, gateway=Scripted(gateway, [False, True, False, False]))
    await use(deps, org.id, account_id, "35", "u1")  # 15: below the trigger
    assert await recharges.run_due(worker) == 1  # declined: a retry in 60 s
    clock.advance(seconds=61)
    assert await recharges.run_due(worker) == 1  # through: 115
    assert (await reload(deps, account_id)).recharge.consecutive_failures == 0

    await use(deps, org.id, account_id, "100", "u2")  # 15 again, on the same card
    assert await recharges.run_due(worker) == 1  # declined: the first failure of a new run, not the second
    retry = await pending(deps, account_id)
    assert retry is not None
    assert retry.not_before.replace(tzinfo=clock.now.tzinfo) == clock.now + timedelta(seconds=60)
    clock.advance(seconds=61)
    assert await recharges.run_due(worker) == 1  # the second: auto-recharge stays on
    assert (await reload(deps, account_id)).recharge.status is RechargeStatus.ACTIVE


# a worker that died, or got no answer from the gateway


class AnswerLost:
    """The sandbox, but the first charge's answer is lost after the gateway took the money (a read timeout)."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.lost = False

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        result = await self.inner.charge(token, amount, idempotency_key)
        if not self.lost:
            self.lost = True
            raise TimeoutError("read timed out")
        return result

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self.inner.find_charge(idempotency_key)


async def test_a_charge_whose_answer_was_lost_stays_pending_and_is_credited_once(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    charges_before = len(gateway.charges)
    timing_out = replace(deps, gateway=AnswerLost(gateway))
    assert await recharges.run_due(timing_out) == 1
    [waiting] = await attempts(deps, account_id)
    assert waiting.status is AttemptStatus.PENDING  # not FAILED: the card may have been charged
    assert (await reload(deps, account_id)).recharge.consecutive_failures == 0
    assert await recharges.run_due(timing_out) == 0  # its lease holds it until it runs out
    clock.advance(seconds=61)
    assert await recharges.run_due(timing_out) == 1
    [settled] = await attempts(deps, account_id)
    assert (settled.id, settled.status) == (waiting.id, AttemptStatus.SUCCEEDED)
    assert len(gateway.charges) == charges_before + 1  # charged once, not once per try
    assert len(await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])) == 1
    assert (await reload(deps, account_id)).balance_micros == micros("110")


@pytest.mark.parametrize("change", ["disable", "close"])
@pytest.mark.parametrize("when", ["while leased", "after the lease"])
async def test_a_charge_made_before_its_worker_died_is_credited_whatever_was_changed_since(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock, change: str, when: str) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    claim = await recharges.claim_next(deps)
    assert claim is not None
    assert isinstance(await recharges.charge(deps, claim), ChargeResult)  # charged; then the worker dies

    async def make_change() -> None:
        if change == "disable":
            await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
        else:
            await accounts.close_account(deps, org.id, account_id)

    if when == "while leased":
        await make_change()
    clock.advance(seconds=61)
    if when == "after the lease":
        await make_change()
    worker_deps, spy = recording(deps, gateway)
    assert await recharges.run_due(worker_deps) == 1
    assert spy.lookups == [f"recharge:{claim.attempt.id}"]
    assert spy.calls == []  # looked up, not charged again
    [settled] = await attempts(deps, account_id)
    assert settled.status is AttemptStatus.SUCCEEDED
    assert (await reload(deps, account_id)).balance_micros == micros("110")
    assert len(await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])) == 1


@pytest.mark.parametrize("change", ["add funds", "disable", "close"])
async def test_a_charge_that_outlasts_its_lease_is_credited_once_after_another_worker_cancelled_the_attempt(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock, change: str) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)

    async def make_change() -> object:
        if change == "add funds":
            return await fund(deps, org.id, account_id, "50", key="by-hand")
        if change == "disable":
            return await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
        return await accounts.close_account(deps, org.id, account_id)

    slow_deps, claim, in_flight = await charge_outlasting_its_lease(deps, gateway, clock, make_change)
    outcome = await in_flight
    assert isinstance(outcome, ChargeResult)
    assert outcome.succeeded  # the card was charged
    settled = await recharges.settle(slow_deps, claim, outcome)
    assert settled is not None
    assert (settled.status, settled.failure_reason) == (AttemptStatus.SUCCEEDED, None)
    assert await recharges.settle(slow_deps, claim, outcome) is None  # settled twice: credited once

    [attempt] = await attempts(deps, account_id)
    assert attempt.status is AttemptStatus.SUCCEEDED
    [credit] = await entries(deps, account_id, [EntryKind.AUTO_RECHARGE])
    assert (credit.amount_micros, credit.id) == (micros("100"), attempt.transaction_id)
    assert [str(money) for _, money, result in gateway.charges if result.succeeded][-1] == "100.00 SEK"
    added = "50" if change == "add funds" else "0"
    assert (await reload(deps, account_id)).balance_micros == micros("110") + micros(added)
    assert await pending(deps, account_id) is None


async def test_a_late_credit_leaves_a_newer_attempt_pending_and_the_worker_cancels_it_if_no_longer_due(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)

    async def add_funds() -> object:
        return await fund(deps, org.id, account_id, "50", key="by-hand")

    slow_deps, claim, in_flight = await charge_outlasting_its_lease(deps, gateway, clock, add_funds)
    newer = (await use(deps, org.id, account_id, "45", "u1")).triggered_recharge  # 60 - 45: below the trigger
    assert newer is not None
    settled = await recharges.settle(slow_deps, claim, await in_flight)
    assert settled is not None
    assert settled.status is AttemptStatus.SUCCEEDED
    assert await count_pending_rows(deps, account_id) == 1  # the newer one, still the only one
    assert (await reload(deps, account_id)).balance_micros == micros("115")
    charges_before = len(gateway.charges)
    assert await recharges.run_due(deps) == 0  # no longer due: cancelled, not charged
    assert len(gateway.charges) == charges_before
    [cancelled, credited] = await attempts(deps, account_id)
    assert (cancelled.id, cancelled.status, credited.status) == (newer.id, AttemptStatus.FAILED,
                                                                  AttemptStatus.SUCCEEDED)


async def test_an_attempt_claimed_by_a_worker_that_died_before_charging_is_cancelled_after_disabling(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id)
    assert await recharges.claim_next(deps) is not None  # and the worker dies before calling the gateway
    await accounts.update_recharge_settings(deps, org.id, _settings(account_id, False, None, None))
    assert await count_pending_rows(deps, account_id) == 1  # it may have been charged: the workers' to finish
    charges_before = len(gateway.charges)
    clock.advance(seconds=61)
    assert await recharges.run_due(deps) == 1
    [cancelled] = await attempts(deps, account_id)
    assert (cancelled.status, cancelled.failure_reason) == (AttemptStatus.FAILED, "cancelled: auto-recharge disabled")
    assert len(gateway.charges) == charges_before
    assert (await reload(deps, account_id)).balance_micros == micros("10")


# settings saved while an attempt waits


async def test_a_waiting_attempt_charges_the_amount_saved_after_it_was_created(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id, amount="5000", trigger="20")
    assert await recharges.run_due(deps) == 1  # declined; a retry of 5000 waits 60 s
    await accounts.update_payment_method(deps, org.id, account_id, "tok_visa")
    await enable_recharge(deps, org.id, account_id, amount="50", trigger="20")  # the admin lowers the amount
    [retry, _] = await attempts(deps, account_id)
    assert (retry.status, retry.amount_micros) == (AttemptStatus.PENDING, micros("50"))
    assert await recharges.run_due(deps) == 1
    assert [str(money) for _, money, result in gateway.charges if result.succeeded][-1] == "50.00 SEK"
    assert (await reload(deps, account_id)).balance_micros == micros("60")


async def test_saving_a_trigger_below_the_balance_cancels_a_waiting_attempt(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    charges_before = len(gateway.charges)
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="5")
    [cancelled] = await attempts(deps, account_id)
    assert (cancelled.status, cancelled.failure_reason) == (AttemptStatus.FAILED,
                                                            "cancelled: balance no longer below the trigger")
    assert await recharges.run_due(deps) == 0
    assert len(gateway.charges) == charges_before


async def test_a_trigger_raised_while_an_attempt_was_charged_gets_the_next_attempt_at_once(
        deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    claim = await recharges.claim_next(deps)
    assert claim is not None
    await enable_recharge(deps, org.id, account_id, amount="1000", trigger="500")  # the claimed 100 is charged
    await recharges.settle(deps, claim, await recharges.charge(deps, claim))
    assert (await reload(deps, account_id)).balance_micros == micros("110")  # still below 500
    follow_up = await pending(deps, account_id)
    assert follow_up is not None
    assert follow_up.amount_micros == micros("1000")
    assert await recharges.run_due(deps) == 1
    assert (await reload(deps, account_id)).balance_micros == micros("1110")


async def test_a_retry_is_cancelled_when_funds_added_meanwhile_lifted_the_balance_above_the_trigger(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id)
    assert await recharges.run_due(deps) == 1  # declined; a retry waits 60 s
    await accounts.update_payment_method(deps, org.id, account_id, "tok_visa")  # due at once, but not yet taken
    await fund(deps, org.id, account_id, "200", key="by-hand")
    charges_before = len(gateway.charges)
    assert await recharges.run_due(deps) == 0
    [cancelled, _] = await attempts(deps, account_id)
    assert (cancelled.status, cancelled.failure_reason) == (AttemptStatus.FAILED,
                                                            "cancelled: balance no longer below the trigger")
    assert len(gateway.charges) == charges_before
    assert (await reload(deps, account_id)).balance_micros == micros("210")


async def _declined_twice(deps: Deps, org: Org, clock: Clock) -> int:
    """An account with 10 on it and auto-recharge on a declining card, which has been declined twice."""
    account_id = await _funded(deps, org, "10")
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    await enable_recharge(deps, org.id, account_id)
    for _ in range(2):
        assert await recharges.run_due(deps) == 1
        clock.advance(seconds=601)
    return account_id


async def test_a_new_card_gets_its_own_three_tries_before_a_suspension(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _declined_twice(deps, org, clock)
    await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")  # another declining card
    assert (await reload(deps, account_id)).recharge.consecutive_failures == 0
    assert await recharges.run_due(deps) == 1
    account = await reload(deps, account_id)
    assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.ACTIVE, 1)
    assert await pending(deps, account_id) is not None


@pytest.mark.parametrize("change", ["new card", "settings saved"])
async def test_a_decline_landing_after_the_card_was_replaced_or_the_settings_saved_does_not_count_against_them(
        deps: Deps, org: Org, clock: Clock, change: str) -> None:
    account_id = await _declined_twice(deps, org, clock)
    claim = await recharges.claim_next(deps)  # the third try, on the first card
    assert claim is not None
    if change == "new card":  # another declining card, to count its own tries
        await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    else:
        await enable_recharge(deps, org.id, account_id, amount="200")
    assert await recharges.settle(deps, claim, await recharges.charge(deps, claim)) is not None  # declined

    account = await reload(deps, account_id)
    assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.ACTIVE, 0)
    [retry, declined, *_] = await attempts(deps, account_id)
    assert (declined.id, declined.status, declined.failure_reason) == (claim.attempt.id, AttemptStatus.FAILED,
                                                                      "card declined")
    assert retry.status is AttemptStatus.PENDING
    assert retry.not_before.replace(tzinfo=clock.now.tzinfo) == clock.now  # due at once
    for failures in (1, 2):  # the card, or the settings, get their own three tries
        assert await recharges.run_due(deps) == 1
        account = await reload(deps, account_id)
        assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.ACTIVE, failures)
        clock.advance(seconds=601)
    assert await recharges.run_due(deps) == 1
    assert (await reload(deps, account_id)).recharge.status is RechargeStatus.SUSPENDED


@pytest.mark.parametrize("change", ["new card", "settings saved"])
async def test_a_decline_that_a_worker_taking_over_finds_does_not_count_against_a_card_replaced_since(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway, change: str) -> None:
    account_id = await _declined_twice(deps, org, clock)
    claim = await recharges.claim_next(deps)  # the third try, on the first card: declined, then its worker dies
    assert claim is not None
    assert claim.token is not None
    assert not (await gateway.charge(claim.token, claim.attempt.amount,
                                     recharges.gateway_key(claim.attempt.id))).succeeded
    clock.advance(seconds=61)  # its lease runs out
    if change == "new card":  # another declining card, to count its own tries
        await accounts.update_payment_method(deps, org.id, account_id, "tok_chargeDeclined")
    else:
        await enable_recharge(deps, org.id, account_id, amount="200")

    # Another worker takes the attempt over and finds its decline: the next try is the new terms', at once.
    assert await recharges.run_due(deps) == 2
    account = await reload(deps, account_id)
    assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.ACTIVE, 1)
    [retry, first_of_new, taken_over, *_] = await attempts(deps, account_id)
    assert (taken_over.id, taken_over.status, taken_over.failure_reason) == (claim.attempt.id, AttemptStatus.FAILED,
                                                                            "card declined")
    assert first_of_new.status is AttemptStatus.FAILED
    assert retry.status is AttemptStatus.PENDING
    for _ in range(2):  # the new card, or the saved settings, get their own three tries
        clock.advance(seconds=601)
        assert await recharges.run_due(deps) == 1
    account = await reload(deps, account_id)
    assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.SUSPENDED, 3)


async def test_an_attempt_an_older_release_claimed_is_taken_over_under_the_terms_of_the_moment(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    account_id = await _declined_twice(deps, org, clock)
    claim = await recharges.claim_next(deps)
    assert claim is not None
    assert claim.token is not None
    assert claim.attempt.id is not None
    async with deps.uow(write=True) as uow:  # a worker from before migration 0006 records no terms
        attempt = await uow.attempts.get(claim.attempt.id, for_update=True)
        assert attempt is not None
        assert attempt.claimed_with is not None
        attempt.claimed_with = None
        await uow.attempts.save(attempt)
        await uow.commit()
    await gateway.charge(claim.token, claim.attempt.amount, recharges.gateway_key(claim.attempt.id))
    clock.advance(seconds=61)

    assert await recharges.run_due(deps) == 1  # the third decline on the same card: counted, as before
    account = await reload(deps, account_id)
    assert (account.recharge.status, account.recharge.consecutive_failures) == (RechargeStatus.SUSPENDED, 3)
