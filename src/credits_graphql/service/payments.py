"""The payment gateway port. A real gateway plugs in here without touching the rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from credits_graphql.domain.money import Money


class UnknownPaymentToken(Exception):
    """The gateway does not know the token a client sent."""


@dataclass(frozen=True, slots=True)
class CardDetails:
    brand: str
    last4: str


@dataclass(frozen=True, slots=True)
class ChargeResult:
    succeeded: bool
    charge_id: str | None = None
    failure_reason: str | None = None


class PaymentGateway(Protocol):
    async def describe(self, token: str) -> CardDetails:
        """The card behind a token; raises UnknownPaymentToken."""
        ...

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        """Charges once per idempotency key: a repeated key returns the first result, charging nothing."""
        ...

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        """The result of the charge made with this key, or None if none was; never charges. For a charge whose
        caller died or got no answer, when charging anew is no longer wanted (the account closed since)."""
        ...
