"""Auto-recharge: the settings rules, when a recharge is due, and what a failed attempt leads to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from credits_graphql.domain.errors import ErrorCode, RuleViolation, RuleViolations
from credits_graphql.domain.money import Money
from credits_graphql.domain.policy import Policy

CANCELLED = "cancelled: "
"""How the failure reason of a charge we gave up ourselves begins, as opposed to a gateway's decline: a verdict from a
lookup that found no charge by its key, which a charge still in flight with that key may yet contradict."""
MAX_FAILURE_REASON = 255
"""Characters of a failure reason kept (the column's size): a gateway's message may be longer."""


class RechargeStatus(StrEnum):
    DISABLED = "DISABLED"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class AttemptStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(slots=True)
class RechargeSettings:
    status: RechargeStatus = RechargeStatus.DISABLED
    amount_micros: int | None = None
    trigger_micros: int | None = None
    updated_at: datetime | None = None
    consecutive_failures: int = 0

    def is_due(self, balance_micros: int) -> bool:
        """A recharge is due when auto-recharge is ACTIVE and the balance is strictly below the trigger."""
        return (
            self.status is RechargeStatus.ACTIVE
            and self.trigger_micros is not None
            and balance_micros < self.trigger_micros
        )

    def turn_off(self, at: datetime) -> None:
        """DISABLED, keeping the last amounts for display (a closed account recharges no more)."""
        if self.status is not RechargeStatus.DISABLED:
            self.status = RechargeStatus.DISABLED
            self.consecutive_failures = 0
            self.updated_at = at

    def card_replaced(self, at: datetime) -> None:
        """A new payment method lifts a suspension, and its failures are counted from zero: the old card's
        declines do not bring the new one closer to a suspension."""
        if self.status is RechargeStatus.SUSPENDED:
            self.status = RechargeStatus.ACTIVE
            self.updated_at = at
        self.consecutive_failures = 0


@dataclass(slots=True)
class RechargeAttempt:
    account_id: int
    amount_micros: int
    currency: str
    created_at: datetime
    not_before: datetime
    status: AttemptStatus = AttemptStatus.PENDING
    failure_reason: str | None = None
    transaction_id: int | None = None
    triggered_by_entry_id: int | None = None
    lease_expires_at: datetime | None = None
    settled_at: datetime | None = None
    claimed_with: str | None = None
    """The account's `recharge_terms` (its card and saved settings) when a worker first claimed the attempt: the
    charge's decline counts against those only, whichever worker settles it and whatever changed since. None until
    claimed, and on attempts claimed by a release before 0006."""
    id: int | None = None

    @property
    def amount(self) -> Money:
        return Money(self.amount_micros, self.currency)

    @property
    def was_claimed(self) -> bool:
        """A worker claimed it and did not give it back: its card may have been charged, whatever became of that
        worker, so only a worker finishes it, looking its charge up first (service/recharges.py)."""
        return self.lease_expires_at is not None

    def follow(self, settings: RechargeSettings) -> None:
        """Saved settings apply to an attempt no worker has claimed: it charges their amount, and at once, as
        saving clears the failure count that its back-off came from."""
        assert settings.amount_micros is not None
        assert not self.was_claimed
        self.amount_micros = settings.amount_micros
        self.make_due()

    def make_due(self) -> None:
        """Due at once. An attempt due at once is not due before its creation (a worker takes it whatever its own
        clock says): the host that created it may run minutes ahead of the worker's."""
        self.not_before = min(self.not_before, self.created_at)

    @property
    def was_cancelled(self) -> bool:
        return self.status is AttemptStatus.FAILED and (self.failure_reason or "").startswith(CANCELLED)

    def can_settle(self, succeeded: bool) -> bool:
        """Whether a gateway's answer may still settle it: while PENDING, and a success once it was cancelled."""
        return self.status is AttemptStatus.PENDING or (succeeded and self.was_cancelled)

    def succeed(self, transaction_id: int, at: datetime) -> None:
        """Credited; also once cancelled, when the charge of a worker whose lease ran out went through after another
        worker found none and cancelled the attempt (a gateway answers a key with its first result, so a success
        never follows a gateway's decline)."""
        self._settle(AttemptStatus.SUCCEEDED, at)
        self.transaction_id = transaction_id
        self.failure_reason = None

    def fail(self, reason: str, at: datetime) -> None:
        self._settle(AttemptStatus.FAILED, at)
        self.failure_reason = reason[:MAX_FAILURE_REASON]

    def cancel(self, reason: str, at: datetime) -> None:
        """Failed without a charge, as far as we know: the attempt may no longer be charged."""
        self.fail(f"{CANCELLED}{reason}", at)

    def _settle(self, status: AttemptStatus, at: datetime) -> None:
        if not self.can_settle(status is AttemptStatus.SUCCEEDED):
            raise ValueError(f"recharge attempt {self.id} is already {self.status}")
        self.status = status
        self.settled_at = at
        self.lease_expires_at = None


def new_attempt(account_id: int, settings: RechargeSettings, currency: str, at: datetime,
                not_before: datetime | None = None, triggered_by_entry_id: int | None = None) -> RechargeAttempt:
    assert settings.amount_micros is not None
    return RechargeAttempt(
        account_id=account_id, amount_micros=settings.amount_micros, currency=currency, created_at=at,
        not_before=not_before or at, triggered_by_entry_id=triggered_by_entry_id,
    )


def after_decline(attempt: RechargeAttempt, settings: RechargeSettings, reason: str, at: datetime, *,
                  counts: bool, account_open: bool, policy: Policy) -> RechargeAttempt | None:
    """A declined charge: the attempt FAILED, and the next attempt, if any. The decline `counts` against the
    settings when the attempt was charged on today's terms (Account.recharge_terms): the next try then waits the
    back-off, and after the last allowed failure auto-recharge suspends. A new card or saved settings start a count of
    their own: their next try is due at once. None when suspended, no longer ACTIVE, or the account closed."""
    attempt.fail(reason, at)
    delay: timedelta | None = timedelta(0)
    if counts:
        settings.consecutive_failures += 1
        delay = policy.retry_delay(settings.consecutive_failures)
    if delay is None:
        settings.status = RechargeStatus.SUSPENDED
        return None
    if settings.status is not RechargeStatus.ACTIVE or not account_open:
        return None
    return new_attempt(attempt.account_id, settings, attempt.currency, at, not_before=at + delay)


def configure(current: RechargeSettings, *, enabled: bool, recharge_amount: Decimal | None,
              trigger_balance: Decimal | None, currency: str, policy: Policy, has_payment_method: bool,
              at: datetime) -> RechargeSettings:
    """New settings from an admin's input. Saving always clears a suspension and the failure count. Every field
    at fault is reported (RuleViolations), so that a form shows each error by its input."""
    code = ErrorCode.INVALID_RECHARGE_SETTINGS
    faults: list[RuleViolation] = []
    if enabled:
        faults += [RuleViolation(code, f"{name} is required when auto-recharge is enabled.", ["input", name])
                   for name, value in (("rechargeAmount", recharge_amount), ("triggerBalance", trigger_balance))
                   if value is None]
    amount, trigger = current.amount_micros, current.trigger_micros
    try:
        if recharge_amount is not None:
            amount = policy.charge_micros(recharge_amount, currency, code, ["input", "rechargeAmount"])
    except RuleViolation as fault:
        faults.append(fault)
    try:
        if trigger_balance is not None:
            trigger = _trigger_micros(trigger_balance, currency, policy)
    except RuleViolation as fault:
        faults.append(fault)
    if not faults and amount is not None and trigger is not None and trigger >= amount:
        faults.append(RuleViolation(code, "triggerBalance must be less than rechargeAmount, so that one recharge "
                                    "lifts the balance above the trigger.", ["input", "triggerBalance"]))
    if enabled and not has_payment_method:
        faults.append(RuleViolation(ErrorCode.PAYMENT_METHOD_REQUIRED,
                                    "Add a payment method before enabling auto-recharge.", ["input", "enabled"]))
    if faults:
        raise RuleViolations(faults) if len(faults) > 1 else faults[0]
    return RechargeSettings(
        status=RechargeStatus.ACTIVE if enabled else RechargeStatus.DISABLED,
        amount_micros=amount, trigger_micros=trigger, updated_at=at, consecutive_failures=0,
    )


def _trigger_micros(trigger: Decimal, currency: str, policy: Policy) -> int:
    field = ["input", "triggerBalance"]
    if trigger < 0:
        raise RuleViolation(ErrorCode.INVALID_RECHARGE_SETTINGS, "triggerBalance may not be negative.", field)
    # The trigger must fit the minor unit like a charge; its upper bound is the recharge amount.
    unbounded = Policy(min_purchase=Decimal(0), max_purchase=policy.max_purchase)
    return unbounded.charge_micros(trigger, currency, ErrorCode.INVALID_RECHARGE_SETTINGS, field)
