"""Looks up again, for a while, the charges a worker cancelled on a lookup, and credits those that went through.

A worker cancels a recharge attempt, or an `addFunds` charge, when the gateway knows no charge by its key and the
account may be charged no more (funds added, auto-recharge disabled, the account closed). A call with that key may
still be in flight: the call of a worker whose lease ran out, or the request's own. Its success is credited when its
answer comes (recharges.settle, ledger.settle_funds_charge); but when its answer is lost (a timeout, a crash), only a
later lookup finds that the card was charged. The worker runs this every RECONCILE_EVERY over the cancellations of
the last RECONCILE_WINDOW; `credits-graphql reconcile-charges` runs it over any window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from credits_graphql.domain.funds import FundsCharge
from credits_graphql.domain.recharge import AttemptStatus, RechargeAttempt
from credits_graphql.service import ledger, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult

log = logging.getLogger(__name__)

RECONCILE_EVERY = timedelta(minutes=5)
RECONCILE_WINDOW = timedelta(hours=1)
"""Far longer than any gateway call: a charge in flight when its attempt was cancelled has its result by then."""

_PAGE = 500


@dataclass(frozen=True, slots=True)
class Reconciled:
    looked_up: int
    credited: int
    """Charges that went through after they were cancelled, now credited."""
    unanswered: int
    """Lookups the gateway did not answer (an error): those charges are looked up again on the next run."""


async def reconcile_cancelled(deps: Deps, since: datetime) -> Reconciled:
    """Looks up every charge cancelled at or after `since`, and credits each that went through, once."""
    tally = _Tally()
    after: int | None = None
    while attempts := await _attempts_page(deps, since, after):
        for attempt in attempts:
            assert attempt.id is not None
            if (found := await tally.look_up(deps, recharges.gateway_key(attempt.id))) is not None:
                settled = await recharges.settle(deps, recharges.Claim(attempt, None, reclaimed=True), found)
                tally.credit(settled is not None and settled.status is AttemptStatus.SUCCEEDED,
                             "recharge attempt", attempt.id)
        after = attempts[-1].id
    after = None
    while charges := await _funds_charges_page(deps, since, after):
        for charge in charges:
            if (found := await tally.look_up(deps, charge.gateway_key)) is not None:
                _, recorded = await ledger.settle_funds_charge(deps, charge, found, for_the_request=True)
                tally.credit(recorded is not None and not recorded.replayed, "funds charge", charge.id)
        after = charges[-1].id
    return Reconciled(tally.looked_up, tally.credited, tally.unanswered)


class _Tally:
    def __init__(self) -> None:
        self.looked_up = self.credited = self.unanswered = 0

    async def look_up(self, deps: Deps, key: str) -> ChargeResult | None:
        """The charge made with `key` if it went through; None if it did not, or the gateway gave no answer."""
        self.looked_up += 1
        try:
            found = await deps.gateway.find_charge(key)
        except Exception:
            self.unanswered += 1
            log.warning("gateway error looking up the cancelled charge %s; looked up again on the next run", key,
                        exc_info=True)
            return None
        return found if found is not None and found.succeeded else None

    def credit(self, credited: bool, what: str, row_id: int | None) -> None:
        if credited:
            self.credited += 1
            log.warning("%s %s was charged after it was cancelled, finding no charge: credited now", what, row_id)


async def _attempts_page(deps: Deps, since: datetime, after: int | None) -> list[RechargeAttempt]:
    async with deps.uow() as uow:
        return await uow.attempts.cancelled_since(since, after, _PAGE)


async def _funds_charges_page(deps: Deps, since: datetime, after: int | None) -> list[FundsCharge]:
    async with deps.uow() as uow:
        return await uow.funds_charges.cancelled_since(since, after, _PAGE)
