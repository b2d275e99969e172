"""A manual funds charge settles once; a cancelled one may still be credited when its charge went through."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from credits_graphql.domain.funds import FundsCharge, FundsChargeStatus
from credits_graphql.domain.recharge import CANCELLED

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def charge() -> FundsCharge:
    return FundsCharge(account_id=7, idempotency_key="k", request_hash="h", amount_micros=50_000_000, currency="SEK",
                       payment_token="tok_visa", gateway_key="funds:7:x", created_at=NOW)


def test_a_charge_may_be_settled_while_pending_and_once_cancelled_only_by_a_success() -> None:
    pending, cancelled, declined, succeeded = charge(), charge(), charge(), charge()
    cancelled.decline(f"{CANCELLED}account closed", NOW)
    declined.decline("card declined", NOW)
    succeeded.succeed(1, NOW)
    assert [(c.can_settle(True), c.can_settle(False)) for c in (pending, cancelled, declined, succeeded)] == [
        (True, True), (True, False), (False, False), (False, False)]


def test_a_cancelled_charge_may_succeed_once_and_a_declined_one_not_at_all() -> None:
    cancelled = charge()
    cancelled.decline(f"{CANCELLED}account closed", NOW)
    with pytest.raises(ValueError, match="already"):
        cancelled.decline("declined", NOW)
    cancelled.succeed(1, NOW)
    assert (cancelled.status, cancelled.failure_reason, cancelled.transaction_id) == (
        FundsChargeStatus.SUCCEEDED, None, 1)
    with pytest.raises(ValueError, match="already"):
        cancelled.succeed(2, NOW)
    declined = charge()
    declined.decline("card declined", NOW)
    with pytest.raises(ValueError, match="already"):
        declined.succeed(1, NOW)
