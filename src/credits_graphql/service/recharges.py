"""The recharge worker's use cases: claim a due attempt, charge it outside any transaction, settle it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from credits_graphql.domain import recharge
from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.recharge import RechargeAttempt, RechargeStatus
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult
from credits_graphql.service.transient import retry_on_conflict

log = logging.getLogger(__name__)

# A claimed attempt is another worker's to take over when its worker has not settled it by then
# (CREDITS_RECHARGE_LEASE_SECONDS). The taker charges with the same idempotency key, so a charge made
# before a crash is credited once; a lease shorter than a charge takes only costs a repeated gateway call.
LEASE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Claim:
    attempt: RechargeAttempt
    token: str


@retry_on_conflict
async def claim_next(deps: Deps, lease: timedelta = LEASE) -> Claim | None:
    """Leases the oldest due attempt. Attempts that may no longer be charged are failed on the way."""
    now = deps.clock()
    async with deps.uow(write=True) as uow:
        while (attempt := await uow.attempts.next_due(now)) is not None:
            account = await uow.accounts.get_any(attempt.account_id)
            assert account is not None
            if account.is_closed:
                attempt.fail("cancelled: account closed", now)
            elif account.recharge.status is not RechargeStatus.ACTIVE:
                attempt.fail(f"cancelled: auto-recharge {account.recharge.status.lower()}", now)
            elif account.payment_method is None:
                attempt.fail("cancelled: no payment method", now)
            else:
                attempt.lease_expires_at = now + lease
                await uow.attempts.save(attempt)
                await uow.commit()
                return Claim(attempt, account.payment_method.token)
            await uow.attempts.save(attempt)
        await uow.commit()
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
        attempt.lease_expires_at = None
        await uow.attempts.save(attempt)
        await uow.commit()
    return True


async def charge(deps: Deps, claim: Claim) -> ChargeResult:
    assert claim.attempt.id is not None
    try:
        return await deps.gateway.charge(claim.token, claim.attempt.amount,
                                         idempotency_key=f"recharge:{claim.attempt.id}")
    except Exception as error:  # a gateway outage is a failed attempt, retried on the back-off schedule
        log.warning("gateway error charging recharge attempt %s", claim.attempt.id, exc_info=True)
        return ChargeResult(succeeded=False, failure_reason=f"gateway error: {type(error).__name__}")


@retry_on_conflict
async def settle(deps: Deps, claim: Claim, result: ChargeResult) -> RechargeAttempt | None:
    """Credits a successful charge or records the failure and schedules the next try, in one transaction.

    Returns None when another worker settled the attempt first (its lease had run out)."""
    assert claim.attempt.id is not None
    now = deps.clock()
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.get_any(claim.attempt.account_id, for_update=True)
        attempt = await uow.attempts.get(claim.attempt.id, for_update=True)
        assert account is not None
        assert attempt is not None
        if attempt.status is not recharge.AttemptStatus.PENDING:
            return None
        settings = account.recharge
        if result.succeeded:
            entry = await uow.ledger.append(account.credit(EntryKind.AUTO_RECHARGE, attempt.amount_micros, now))
            assert entry.id is not None
            attempt.succeed(entry.id, now)
            await uow.attempts.save(attempt)
            settings.consecutive_failures = 0
        else:
            attempt.fail(result.failure_reason or "declined", now)
            await uow.attempts.save(attempt)  # before the next PENDING one: one PENDING per account
            settings.consecutive_failures += 1
            delay = deps.policy.retry_delay(settings.consecutive_failures)
            if delay is None:
                settings.status = RechargeStatus.SUSPENDED
            elif settings.status is RechargeStatus.ACTIVE and not account.is_closed:
                await uow.attempts.add(recharge.new_attempt(account.id, settings, account.currency, now,
                                                            not_before=now + delay))
        await uow.accounts.save(account)
        await uow.commit()
    return attempt


async def run_due(deps: Deps, limit: int = 100, lease: timedelta = LEASE) -> int:
    """Processes due attempts until none is left (or `limit`); returns how many were settled."""
    settled = 0
    while settled < limit:
        claim = await claim_next(deps, lease)
        if claim is None:
            break
        await settle(deps, claim, await charge(deps, claim))
        settled += 1
    return settled
