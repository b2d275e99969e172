"""Recharge leases between workers: a dead worker's attempt is taken over with the same gateway key and
credited once; a stopping worker hands back a claim it has not charged."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.money import Money
from credits_graphql.domain.recharge import AttemptStatus
from credits_graphql.gateways.sandbox import SandboxGateway, SqliteJournal, sandbox_from_env
from credits_graphql.service import queries, recharges
from credits_graphql.service.deps import Deps
from tests.conftest import Clock, Org
from tests.service.support import HeldGateway, enable_recharge, fund, open_account, use

LEASE = timedelta(seconds=5)


async def _account_with_pending_recharge(deps: Deps, org: Org) -> int:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    recorded = await use(deps, org.id, account.id, "90", "call-1")
    assert recorded.triggered_recharge is not None
    return account.id


async def test_an_attempt_a_dead_worker_charged_is_taken_over_after_its_lease_and_credited_once(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    account_id = await _account_with_pending_recharge(deps, org)
    dead = await recharges.claim_next(deps, LEASE)
    assert dead is not None
    first_charge = await recharges.charge(deps, dead)  # ... and the worker dies before settling
    assert await recharges.claim_next(deps, LEASE) is None  # still leased

    clock.advance(seconds=LEASE.total_seconds() + 1)
    taker = await recharges.claim_next(deps, LEASE)
    assert taker is not None
    assert taker.attempt.id == dead.attempt.id
    second_charge = await recharges.charge(deps, taker)
    settled = await recharges.settle(deps, taker, second_charge)

    assert second_charge == first_charge  # the gateway answered the repeated key with the first charge
    assert len(gateway.charges) == 2  # the initial funds and the recharge, once
    assert settled is not None
    assert settled.status is AttemptStatus.SUCCEEDED
    assert await recharges.settle(deps, dead, first_charge) is None  # a slow worker's late settle is a no-op
    account = await queries.account(deps, org.id, account_id)
    assert account is not None
    assert account.balance_micros == 110_000_000
    assert await queries.count_entries(deps, account_id, [EntryKind.AUTO_RECHARGE]) == 1


async def test_a_stopping_worker_releases_an_uncharged_claim_for_another_worker_at_once(
        deps: Deps, org: Org, clock: Clock) -> None:
    await _account_with_pending_recharge(deps, org)
    claim = await recharges.claim_next(deps, LEASE)
    assert claim is not None

    assert await recharges.release(deps, claim) is True
    clock.advance(seconds=1)
    again = await recharges.claim_next(deps, LEASE)

    assert again is not None
    assert again.attempt.id == claim.attempt.id
    assert await recharges.release(deps, claim) is False  # no longer that worker's lease
    assert await recharges.run_due(deps, lease=LEASE) == 0  # `again` holds it
    await recharges.settle(deps, again, await recharges.charge(deps, again))
    assert await recharges.release(deps, again) is False  # settled


async def test_a_stopping_worker_hands_back_a_taken_over_attempt_still_claimed_so_the_first_charge_is_credited_as_made(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    account_id = await _account_with_pending_recharge(deps, org)  # balance 10, a recharge of 100 pending
    slow = HeldGateway(gateway)
    first_deps = replace(deps, gateway=slow)
    first = await recharges.claim_next(first_deps, LEASE)
    assert first is not None
    in_flight = asyncio.create_task(recharges.charge(first_deps, first))
    await slow.entered.wait()
    clock.advance(seconds=LEASE.total_seconds() + 1)
    taker = await recharges.claim_next(deps, LEASE)
    assert taker is not None
    assert taker.reclaimed

    assert await recharges.release(deps, taker) is True  # the taker is stopped before it charges
    await enable_recharge(deps, org.id, account_id, amount="300", trigger="20")  # the admin saves new settings
    slow.release.set()
    settled = await recharges.settle(first_deps, first, await in_flight)

    assert settled is not None
    assert settled.status is AttemptStatus.SUCCEEDED
    assert [amount for _, amount, _ in gateway.charges][-1] == Money(100_000_000, "SEK")
    assert await queries.count_entries(deps, account_id, [EntryKind.AUTO_RECHARGE]) == 1
    account = await queries.account(deps, org.id, account_id)
    assert account is not None
    assert account.balance_micros == 110_000_000, "credited what the card was charged, not the new amount"


async def test_an_attempt_handed_back_after_a_takeover_is_taken_at_once_and_its_charge_looked_up_first(
        deps: Deps, org: Org, clock: Clock, gateway: SandboxGateway) -> None:
    # started on an API host whose clock runs ten minutes ahead of the workers'
    await _account_with_pending_recharge(replace(deps, clock=lambda: clock.now + timedelta(minutes=10)), org)
    dead = await recharges.claim_next(deps, LEASE)
    assert dead is not None
    await recharges.charge(deps, dead)  # ... and that worker dies
    clock.advance(seconds=LEASE.total_seconds() + 1)
    taker = await recharges.claim_next(deps, LEASE)
    assert taker is not None
    assert await recharges.release(deps, taker) is True

    again = await recharges.claim_next(deps, LEASE)  # at once, on a clock no later than the taker's
    assert again is not None
    assert (again.attempt.id, again.reclaimed) == (dead.attempt.id, True)
    settled = await recharges.settle(deps, again, await recharges.charge(deps, again))
    assert settled is not None
    assert settled.status is AttemptStatus.SUCCEEDED
    assert len(gateway.charges) == 2  # the initial funds and the recharge, once


async def test_sandboxes_sharing_a_journal_file_answer_a_repeated_key_with_the_first_charge(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    one, other = SandboxGateway(SqliteJournal(path)), sandbox_from_env({"CREDITS_SANDBOX_JOURNAL": str(path)})
    amount = Money(100_000_000, "SEK")

    first = await one.charge("tok_visa", amount, "recharge:1")
    repeated = await other.charge("tok_mastercard", amount, "recharge:1")
    declined = await other.charge("tok_chargeDeclined", amount, "recharge:2")

    assert first.succeeded
    assert first.charge_id
    assert repeated == first
    assert not declined.succeeded
    assert (await one.charge("tok_visa", amount, "recharge:2")) == declined
    assert [(token, money, result) for token, money, result in one.charges] == [
        ("tok_visa", amount, first), ("tok_chargeDeclined", amount, declined)]
