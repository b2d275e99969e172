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


def account_not_found() -> RuleViolation:
    return RuleViolation(ErrorCode.ACCOUNT_NOT_FOUND, "No such account.", ["input", "accountId"])


def account_closed() -> RuleViolation:
    return RuleViolation(ErrorCode.ACCOUNT_CLOSED, "The account is closed.", ["input", "accountId"])
