"""Deployment-wide limits on money movement: purchase bounds and the recharge retry schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.money import (
    LEDGER_SCALE,
    MAX_AMOUNT_MICROS,
    Money,
    format_plain_decimal,
    fractional_digits,
    minor_units,
    to_micros,
)


@dataclass(frozen=True, slots=True)
class Policy:
    min_purchase: Decimal = Decimal(10)
    max_purchase: Decimal = Decimal(100000)
    # Back-off before the 2nd and the 3rd attempt; after the 3rd consecutive failure, auto-recharge suspends.
    retry_delays: tuple[timedelta, ...] = (timedelta(seconds=60), timedelta(seconds=600))

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    def charge_micros(self, amount: Decimal, currency: str, code: ErrorCode, field: list[str]) -> int:
        """An amount charged to a payment method: whole minor units, inside the purchase bounds."""
        if fractional_digits(amount) > minor_units(currency):
            raise RuleViolation(
                code, f"{format_plain_decimal(amount)} {currency} has more decimals than the currency allows "
                f"({minor_units(currency)}).", field)
        if not self.min_purchase <= amount <= self.max_purchase:
            raise RuleViolation(
                code, f"The amount must be between {format_plain_decimal(self.min_purchase)} and "
                f"{format_plain_decimal(self.max_purchase)} {currency}.",
                field)
        return to_micros(amount)

    def retry_delay(self, consecutive_failures: int) -> timedelta | None:
        """The wait before the next attempt, or None when auto-recharge must suspend."""
        if consecutive_failures < 1:
            raise ValueError("retry_delay is asked after a failure")
        if consecutive_failures > len(self.retry_delays):
            return None
        return self.retry_delays[consecutive_failures - 1]


def usage_micros(amount: Decimal, currency: str) -> int:
    """A usage amount: positive, at most the ledger's precision."""
    field = ["input", "amount"]
    if amount <= 0:
        raise RuleViolation(ErrorCode.INVALID_AMOUNT, "Usage must be greater than zero.", field)
    if fractional_digits(amount) > LEDGER_SCALE:
        raise RuleViolation(ErrorCode.INVALID_AMOUNT,
                            f"Usage has more than {LEDGER_SCALE} decimals.", field)
    micros = to_micros(amount)
    if micros > MAX_AMOUNT_MICROS:
        raise RuleViolation(ErrorCode.INVALID_AMOUNT,
                            f"Usage may not exceed {Money(MAX_AMOUNT_MICROS, currency)}.", field)
    return micros
