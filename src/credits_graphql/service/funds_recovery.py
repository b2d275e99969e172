"""The worker's part of `add_funds`: settles charges left PENDING by a request that died (or whose gateway
call failed) between writing its charge and crediting it.

Recovery charges again with the charge's own gateway key. The gateway answers a key it has seen with its
first result, so a charge that went through is credited exactly once and a declined one is recorded as
declined; a charge that never reached the gateway is made now, which is what the caller asked for with
that key (and its retry with the key is answered with this credit). Unless the account was closed since: closing
stops all money movement, so the charge is only looked up, credited if it went through, and cancelled if not (and
credited still if the request's own call, in flight meanwhile, then charges the card)."""

from __future__ import annotations

import logging
from datetime import timedelta

from credits_graphql.domain.funds import FundsCharge
from credits_graphql.domain.recharge import CANCELLED
from credits_graphql.service import ledger
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult
from credits_graphql.service.recharges import LEASE
from credits_graphql.service.transient import retry_on_conflict

log = logging.getLogger(__name__)

# A charge younger than the grace may still be in its request's hands; the worker leaves it alone until then. The
# worker passes its lease (CREDITS_RECHARGE_LEASE_SECONDS) as the grace; this default is for tests.
GRACE = LEASE


@retry_on_conflict
async def claim_stale(deps: Deps, grace: timedelta = GRACE, lease: timedelta = LEASE) -> FundsCharge | None:
    """Leases the oldest PENDING charge older than `grace`, so that other workers skip it meanwhile."""
    now = deps.clock()
    async with deps.uow(write=True) as uow:
        charge = await uow.funds_charges.next_stale(created_before=now - grace, now=now)
        if charge is None:
            return None
        charge.lease_expires_at = now + lease
        await uow.funds_charges.save(charge)
        await uow.commit()
    return charge


async def recover(deps: Deps, charge: FundsCharge) -> FundsCharge | None:
    """Charges with the charge's gateway key and settles it; returns it settled, or None after a gateway
    error (it stays PENDING, whether or not the card was charged, and is tried again when its lease ends)."""
    try:
        if await _account_closed(deps, charge.account_id):
            result = (await deps.gateway.find_charge(charge.gateway_key)
                      or ChargeResult(succeeded=False, failure_reason=f"{CANCELLED}account closed"))
        else:
            result = await deps.gateway.charge(charge.payment_token, charge.amount, charge.gateway_key)
    except Exception:
        log.warning("gateway error recovering funds charge %s; trying again later", charge.id, exc_info=True)
        return None
    settled, _ = await ledger.settle_funds_charge(deps, charge, result, for_the_request=True)
    return settled


async def _account_closed(deps: Deps, account_id: int) -> bool:
    async with deps.uow() as uow:
        account = await uow.accounts.get_any(account_id)
    assert account is not None
    return account.is_closed


async def run_stale(deps: Deps, grace: timedelta = GRACE, lease: timedelta = LEASE, limit: int = 100) -> int:
    """Recovers stale PENDING charges until none is left (or `limit`); returns how many were tried."""
    tried = 0
    while tried < limit and (charge := await claim_stale(deps, grace, lease)) is not None:
        await recover(deps, charge)
        tried += 1
    return tried
