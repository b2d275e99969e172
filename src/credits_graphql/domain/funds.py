"""A manual funds charge, recorded before the card is charged so that a crash cannot lose the money."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from credits_graphql.domain.money import Money
from credits_graphql.domain.recharge import CANCELLED, MAX_FAILURE_REASON


class FundsChargeStatus(StrEnum):
    PENDING = "PENDING"
    """Written before the gateway call: the card may or may not have been charged yet."""
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"


@dataclass(slots=True)
class FundsCharge:
    """One `addFunds` request's charge. `gateway_key` is fixed when it is written, so every later
    charge of it (a retry, a recovering worker) is answered by the gateway with the first result."""

    account_id: int
    idempotency_key: str
    request_hash: str
    amount_micros: int
    currency: str
    payment_token: str
    gateway_key: str
    created_at: datetime
    status: FundsChargeStatus = FundsChargeStatus.PENDING
    failure_reason: str | None = None
    lease_expires_at: datetime | None = None
    settled_at: datetime | None = None
    transaction_id: int | None = None
    api_key_id: int | None = None
    """The API key that asked for it: a worker that credits it in the request's stead records the audit event in
    its name, and then clears it (a request still waiting on the charge then records no second event)."""
    id: int | None = None

    @property
    def amount(self) -> Money:
        return Money(self.amount_micros, self.currency)

    @property
    def was_cancelled(self) -> bool:
        return self.status is FundsChargeStatus.DECLINED and (self.failure_reason or "").startswith(CANCELLED)

    def can_settle(self, succeeded: bool) -> bool:
        """Whether a gateway's answer may still settle it: while PENDING, and a success once it was cancelled."""
        return self.status is FundsChargeStatus.PENDING or (succeeded and self.was_cancelled)

    def succeed(self, transaction_id: int, at: datetime) -> None:
        """Credited; also once cancelled, when the request's charge went through after a worker found none by its
        key and cancelled it (a gateway answers a key with its first result: a success never follows its decline)."""
        self._settle(FundsChargeStatus.SUCCEEDED, at)
        self.transaction_id = transaction_id
        self.failure_reason = None

    def decline(self, reason: str, at: datetime) -> None:
        self._settle(FundsChargeStatus.DECLINED, at)
        self.failure_reason = reason[:MAX_FAILURE_REASON]

    def _settle(self, status: FundsChargeStatus, at: datetime) -> None:
        if not self.can_settle(status is FundsChargeStatus.SUCCEEDED):
            raise ValueError(f"funds charge {self.id} is already {self.status}")
        self.status = status
        self.settled_at = at
        self.lease_expires_at = None
