"""The recharge worker's use cases: claim a due attempt, charge it outside any transaction, settle it.

A claimed attempt's card may have been charged, whatever became of the worker that claimed it (killed, or its
gateway call timed out): it is never failed unless the gateway says so, and a worker that takes it over looks its
charge up before anything else, so that a charge that went through is credited, once, even if auto-recharge was
disabled or the account closed since."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from credits_graphql.domain import recharge
from credits_graphql.domain.ledger import Account, EntryKind
from credits_graphql.domain.recharge import RechargeAttempt, RechargeStatus
from credits_graphql.service.accounts import NO_LONGER_DUE, start_recharge_if_due
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult
from credits_graphql.service.transient import retry_on_conflict

log = logging.getLogger(__name__)

# A claimed attempt is another worker's to take over when its worker has not settled it by then
# (CREDITS_RECHARGE_LEASE_SECONDS). The taker looks the charge up, then charges with the same idempotency key,
# so a charge made before a crash is credited once; a lease shorter than a charge takes costs a repeated call.
LEASE = timedelta(seconds=60)
LEASE_ENDED = datetime(2000, 1, 1, tzinfo=UTC)
"""The lease of an attempt handed back still claimed: ended before any clock this service runs on."""


@dataclass(frozen=True, slots=True)
class Claim:
    attempt: RechargeAttempt
    token: str | None
    """The card to charge; None when the attempt may be charged no more (`cancel_reason`): it is cancelled, unless
    the charge of a worker that claimed it before went through."""
    reclaimed: bool = False
    """A worker claimed it before and did not settle it: its charge may have gone through, and is looked up first."""
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    reason: str


ChargeOutcome = ChargeResult | Cancelled | None
"""The gateway's answer; Cancelled, the attempt not charged; None, no answer (the charge may have gone through):
the attempt stays PENDING and a worker tries again, with the same key, when its lease ends."""


@retry_on_conflict
async def claim_next(deps: Deps, lease: timedelta = LEASE) -> Claim | None:
    """Leases the oldest due attempt. Attempts that may no longer be charged, and that no worker claimed before,
    are failed on the way."""
    now = deps.clock()
    while True:
        async with deps.uow(write=True) as uow:
            attempt = await uow.attempts.next_due(now)
            if attempt is None:
                return None
            account = await uow.accounts.get_any(attempt.account_id)
            assert account is not None
            reason = _why_not_charged(account)
            if reason is None or attempt.was_claimed:
                reclaimed = attempt.was_claimed
                if not reclaimed or attempt.claimed_with is None:  # a taker keeps the terms its charge was made under
                    attempt.claimed_with = account.recharge_terms
                attempt.lease_expires_at = now + lease
                await uow.attempts.save(attempt)
                await uow.commit()
                token = account.payment_method.token if reason is None and account.payment_method else None
                return Claim(attempt, token, reclaimed, reason)
        assert attempt.id is not None
        await _cancel_if_not_chargeable(deps, attempt.account_id, attempt.id, now)


async def _cancel_if_not_chargeable(deps: Deps, account_id: int, attempt_id: int, now: datetime) -> None:
    """Cancels an attempt no worker has claimed, if its account still may not be charged, under the account's lock.

    The claim above read the account without that lock: a usage debit committing meanwhile, which saw this attempt
    PENDING and so started none, may have brought the balance below the trigger again. Here such a debit has either
    committed, and the account read says the attempt is due, or it waits, and then finds no attempt pending."""
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.get_any(account_id, for_update=True)  # the account's lock first, as everywhere
        attempt = await uow.attempts.get(attempt_id, for_update=True)
        assert account is not None
        assert attempt is not None
        reason = _why_not_charged(account)
        if attempt.status is not recharge.AttemptStatus.PENDING or attempt.was_claimed or reason is None:
            return
        attempt.cancel(reason, now)
        await uow.attempts.save(attempt)
        await uow.commit()


def _why_not_charged(account: Account) -> str | None:
    """Why the account's pending attempt may not be charged now, if it may not."""
    if account.is_closed:
        return "account closed"
    if account.recharge.status is not RechargeStatus.ACTIVE:
        return f"auto-recharge {account.recharge.status.lower()}"
    if account.payment_method is None:
        return "no payment method"
    if not account.recharge.is_due(account.balance_micros):  # funds added meanwhile, say, while a retry waited
        return NO_LONGER_DUE
    return None


@retry_on_conflict
async def release(deps: Deps, claim: Claim) -> bool:
    """Gives an uncharged claim back (a stopping worker), so that another worker takes it at once.

    Returns False when the claim was no longer this worker's: settled, or its lease ran out and was taken."""
    assert claim.attempt.id is not None
    async with deps.uow(write=True) as uow:
        attempt = await uow.attempts.get(claim.attempt.id, for_update=True)
        if (attempt is None or attempt.status is not recharge.AttemptStatus.PENDING
                or attempt.lease_expires_at != claim.attempt.lease_expires_at):
            return False
        # A taken-over attempt stays claimed, its lease ended (long before any worker's clock, however skewed: not
        # at its creation, which a host running ahead stamped): the first worker's charge may still go through, so
        # the next worker looks it up first, and saved settings do not change the amount it was charged.
        attempt.lease_expires_at = LEASE_ENDED if claim.reclaimed else None
        await uow.attempts.save(attempt)
        await uow.commit()
    return True


def gateway_key(attempt_id: int) -> str:
    """The idempotency key of an attempt's charge: every worker charging or looking it up uses the same."""
    return f"recharge:{attempt_id}"


async def charge(deps: Deps, claim: Claim) -> ChargeOutcome:
    """Charges the attempt with its own idempotency key; an attempt claimed before is first looked up, so that a
    charge made before a worker died is settled as it went, whatever the account has become since."""
    assert claim.attempt.id is not None
    key = gateway_key(claim.attempt.id)
    try:
        if claim.reclaimed and (found := await deps.gateway.find_charge(key)) is not None:
            return found
        if claim.token is None:
            assert claim.cancel_reason is not None
            return Cancelled(claim.cancel_reason)
        return await deps.gateway.charge(claim.token, claim.attempt.amount, idempotency_key=key)
    except Exception:  # a timeout, an outage: the charge may have gone through, so it is no failure to retry anew
        log.warning("gateway error charging recharge attempt %s; tried again with the same key when its lease ends",
                    claim.attempt.id, exc_info=True)
        return None


@retry_on_conflict
async def settle(deps: Deps, claim: Claim, outcome: ChargeOutcome) -> RechargeAttempt | None:
    """Credits a successful charge, or records the failure and schedules the next try, or the cancellation, in one
    transaction.

    Returns None when there is nothing to settle (no answer from the gateway), or when another worker settled the
    attempt first (its lease had run out); but a success is credited even when another worker cancelled the attempt
    meanwhile, as the account's state may since have required (funds added, auto-recharge disabled, account
    closed): the card was charged."""
    assert claim.attempt.id is not None
    if outcome is None:
        return None
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.get_any(claim.attempt.account_id, for_update=True)
        now = deps.clock()  # with the account locked: its entries are stamped in the order they commit
        attempt = await uow.attempts.get(claim.attempt.id, for_update=True)
        assert account is not None
        assert attempt is not None
        succeeded = isinstance(outcome, ChargeResult) and outcome.succeeded
        # Settled by another worker first; unless it cancelled the attempt, finding no charge, while this worker's
        # charge was in flight (its lease had run out), and that charge went through: the card was charged.
        if not attempt.can_settle(succeeded):
            return None
        if isinstance(outcome, ChargeResult) and not outcome.succeeded:
            following = recharge.after_decline(
                attempt, account.recharge, outcome.failure_reason or "declined", now,
                counts=attempt.claimed_with == account.recharge_terms, account_open=not account.is_closed,
                policy=deps.policy)
            await uow.attempts.save(attempt)  # before the next PENDING one: one PENDING per account
            if following is not None:
                await uow.attempts.add(following)
        else:
            if isinstance(outcome, Cancelled):
                attempt.cancel(outcome.reason, now)
            else:
                entry = await uow.ledger.append(account.credit(EntryKind.AUTO_RECHARGE, attempt.amount_micros, now))
                assert entry.id is not None
                attempt.succeed(entry.id, now)
                account.recharge.consecutive_failures = 0
            await uow.attempts.save(attempt)
            # Settings saved while this one was charged (a higher trigger, auto-recharge enabled again) may leave
            # the balance below the trigger: the next attempt, due at once.
            await start_recharge_if_due(uow, account, now)
        await uow.accounts.save(account)
        await uow.commit()
    return attempt


async def run_due(deps: Deps, limit: int = 100, lease: timedelta = LEASE) -> int:
    """Processes due attempts until none is left (or `limit`); returns how many it claimed."""
    settled = 0
    while settled < limit:
        claim = await claim_next(deps, lease)
        if claim is None:
            break
        await settle(deps, claim, await charge(deps, claim))
        settled += 1
    return settled
