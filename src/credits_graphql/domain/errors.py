"""Business-rule failures. Each carries the code and input path that clients see in `userErrors`."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INVALID_RECHARGE_SETTINGS = "INVALID_RECHARGE_SETTINGS"
    PAYMENT_METHOD_REQUIRED = "PAYMENT_METHOD_REQUIRED"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


class RuleViolation(Exception):
    """A request broke a business rule; the use case that raised it changed nothing."""

    def __init__(self, code: ErrorCode, message: str, field: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = tuple(field) if field is not None else None

    def __repr__(self) -> str:
        return f"RuleViolation({self.code}, {self.message!r}, field={self.field})"

    @property
    def each(self) -> tuple[RuleViolation, ...]:
        """Every rule the input broke: this one, or several (RuleViolations)."""
        return (self,)


class RuleViolations(RuleViolation):
    """Several fields of one input broke their rules: reported together, so that a form shows each by its field.
    The first stands for them all where one is expected."""

    def __init__(self, violations: Sequence[RuleViolation]) -> None:
        first, *_ = violations
        super().__init__(first.code, first.message, first.field)
        self._each = tuple(violations)

    @property
    def each(self) -> tuple[RuleViolation, ...]:
        return self._each


def account_not_found() -> RuleViolation:
    return RuleViolation(ErrorCode.ACCOUNT_NOT_FOUND, "No such account.", ["input", "accountId"])


def account_closed() -> RuleViolation:
    return RuleViolation(ErrorCode.ACCOUNT_CLOSED, "The account is closed.", ["input", "accountId"])
