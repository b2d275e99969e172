"""The built-in sandbox gateway: card test tokens, no network, charges remembered per idempotency key."""

from __future__ import annotations

import asyncio
import uuid

from credits_graphql.domain.money import Money
from credits_graphql.service.payments import CardDetails, ChargeResult, UnknownPaymentToken

TEST_CARDS: dict[str, CardDetails] = {
    "tok_visa": CardDetails(brand="visa", last4="4242"),
    "tok_mastercard": CardDetails(brand="mastercard", last4="4444"),
    "tok_chargeDeclined": CardDetails(brand="visa", last4="0002"),
}
DECLINING_TOKENS = frozenset({"tok_chargeDeclined"})


class SandboxGateway:
    """Succeeds for every test card but `tok_chargeDeclined`, which is declined on every charge.

    Charges are kept in memory: a repeated idempotency key returns the first result, as a real
    gateway does (for the life of the process)."""

    def __init__(self) -> None:
        self._charges: dict[str, tuple[str, Money, ChargeResult]] = {}
        self._lock = asyncio.Lock()

    async def describe(self, token: str) -> CardDetails:
        try:
            return TEST_CARDS[token]
        except KeyError:
            raise UnknownPaymentToken(token) from None

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        async with self._lock:
            if (first := self._charges.get(idempotency_key)) is not None:
                return first[2]
            if token not in TEST_CARDS:
                result = ChargeResult(succeeded=False, failure_reason="unknown payment method")
            elif token in DECLINING_TOKENS:
                result = ChargeResult(succeeded=False, failure_reason="card declined")
            else:
                result = ChargeResult(succeeded=True, charge_id=f"ch_{uuid.uuid4().hex[:24]}")
            self._charges[idempotency_key] = (token, amount, result)
            return result

    @property
    def charges(self) -> list[tuple[str, Money, ChargeResult]]:
        """Every charge made, in order (for tests and the dev console)."""
        return list(self._charges.values())
