"""Auto-recharge rules: validating settings, when a recharge is due, suspension and attempt settlement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.policy import Policy
from credits_graphql.domain.recharge import (
    AttemptStatus,
    RechargeAttempt,
    RechargeSettings,
    RechargeStatus,
    after_decline,
    configure,
    new_attempt,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def save(amount: str | None, trigger: str | None, *, enabled: bool = True, currency: str = "SEK",
         has_payment_method: bool = True, current: RechargeSettings | None = None,
         policy: Policy | None = None) -> RechargeSettings:
    return configure(
        current or RechargeSettings(), enabled=enabled,
        recharge_amount=None if amount is None else Decimal(amount),
        trigger_balance=None if trigger is None else Decimal(trigger),
        currency=currency, policy=policy or Policy(), has_payment_method=has_payment_method, at=NOW,
    )


def refused(amount: str | None, trigger: str | None, **kwargs: object) -> RuleViolation:
    with pytest.raises(RuleViolation) as caught:
        save(amount, trigger, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_valid_settings_enable_auto_recharge_with_exact_amounts() -> None:
    settings = save("100.00", "20.50")
    assert settings.status is RechargeStatus.ACTIVE
    assert settings.amount_micros == 100_000_000
    assert settings.trigger_micros == 20_500_000
    assert settings.updated_at == NOW
    assert settings.consecutive_failures == 0


def test_a_zero_trigger_is_allowed() -> None:
    assert save("10", "0").trigger_micros == 0


@pytest.mark.parametrize(("amount", "trigger", "missing"), [(None, "10", "rechargeAmount"),
                                                            ("100", None, "triggerBalance"),
                                                            (None, None, "rechargeAmount")])
def test_enabling_requires_both_amounts_and_names_the_missing_one(
        amount: str | None, trigger: str | None, missing: str) -> None:
    error = refused(amount, trigger)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", missing)


def test_enabling_requires_both_amounts_even_when_earlier_ones_are_stored() -> None:
    current = save("100", "10")
    error = refused(None, "20", current=current)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", "rechargeAmount")


def test_a_negative_trigger_is_refused() -> None:
    error = refused("100", "-0.01")
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", "triggerBalance")


@pytest.mark.parametrize(("amount", "trigger"), [("100", "100"), ("100", "100.00"), ("100", "150"),
                                                 ("10", "10.00")])
def test_the_trigger_must_be_strictly_below_the_recharge_amount(amount: str, trigger: str) -> None:
    error = refused(amount, trigger)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", "triggerBalance")


def test_a_trigger_just_below_the_recharge_amount_is_accepted() -> None:
    settings = save("100", "99.99")
    assert settings.trigger_micros == 99_990_000


@pytest.mark.parametrize(("amount", "trigger", "currency", "field"), [
    ("100.005", "10", "SEK", "rechargeAmount"),
    ("100", "10.001", "SEK", "triggerBalance"),
    ("1500.5", "100", "JPY", "rechargeAmount"),
    ("1500", "99.5", "JPY", "triggerBalance"),
])
def test_amounts_must_fit_the_currency_minor_unit(amount: str, trigger: str, currency: str, field: str) -> None:
    error = refused(amount, trigger, currency=currency)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", field)


def test_whole_yen_amounts_are_accepted() -> None:
    settings = save("1500", "100", currency="JPY")
    assert (settings.amount_micros, settings.trigger_micros) == (1_500_000_000, 100_000_000)


@pytest.mark.parametrize("amount", ["9.99", "100000.01", "0"])
def test_the_recharge_amount_must_lie_within_the_purchase_bounds(amount: str) -> None:
    error = refused(amount, "0")
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", "rechargeAmount")


def test_the_purchase_bounds_are_inclusive_for_the_recharge_amount() -> None:
    assert save("10", "5").amount_micros == 10_000_000
    assert save("100000", "5").amount_micros == 100_000_000_000


def test_the_recharge_amount_follows_a_deployments_bounds() -> None:
    policy = Policy(min_purchase=Decimal(50), max_purchase=Decimal(500))
    assert refused("20", "5", policy=policy).field == ("input", "rechargeAmount")
    assert save("50", "5", policy=policy).amount_micros == 50_000_000


def test_enabling_without_a_payment_method_is_refused() -> None:
    error = refused("100", "10", has_payment_method=False)
    assert error.code is ErrorCode.PAYMENT_METHOD_REQUIRED
    assert error.field == ("input", "enabled")


def test_invalid_amounts_are_reported_before_the_missing_payment_method() -> None:
    error = refused("100", "100", has_payment_method=False)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS


def test_disabling_needs_no_payment_method_and_keeps_the_last_amounts() -> None:
    current = save("100", "25")
    disabled = save(None, None, enabled=False, has_payment_method=False, current=current)
    assert disabled.status is RechargeStatus.DISABLED
    assert disabled.amount_micros == 100_000_000
    assert disabled.trigger_micros == 25_000_000


def test_disabling_with_new_amounts_validates_and_stores_them() -> None:
    current = save("100", "25")
    disabled = save("200", "50", enabled=False, current=current)
    assert (disabled.amount_micros, disabled.trigger_micros) == (200_000_000, 50_000_000)
    error = refused(None, "150", enabled=False, current=current)
    assert error.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert error.field == ("input", "triggerBalance")


def test_disabling_when_never_configured_leaves_no_amounts() -> None:
    settings = save(None, None, enabled=False, has_payment_method=False)
    assert settings.status is RechargeStatus.DISABLED
    assert settings.amount_micros is None
    assert settings.trigger_micros is None


@pytest.mark.parametrize("enabled", [True, False])
def test_saving_clears_a_suspension_and_the_failure_count(enabled: bool) -> None:
    current = RechargeSettings(status=RechargeStatus.SUSPENDED, amount_micros=100_000_000,
                               trigger_micros=10_000_000, consecutive_failures=3)
    settings = save("100", "10", enabled=enabled, current=current)
    assert settings.status is (RechargeStatus.ACTIVE if enabled else RechargeStatus.DISABLED)
    assert settings.consecutive_failures == 0
    assert settings.updated_at == NOW


def test_configure_does_not_change_the_current_settings() -> None:
    current = save("100", "25")
    save("200", "50", current=current)
    assert (current.amount_micros, current.trigger_micros) == (100_000_000, 25_000_000)


def test_a_recharge_is_due_only_strictly_below_the_trigger() -> None:
    settings = save("100", "20")
    assert settings.is_due(19_999_999)
    assert settings.is_due(0)
    assert not settings.is_due(20_000_000)
    assert not settings.is_due(20_000_001)


def test_a_zero_trigger_never_makes_a_recharge_due_for_a_non_negative_balance() -> None:
    assert not save("100", "0").is_due(0)


@pytest.mark.parametrize("status", [RechargeStatus.DISABLED, RechargeStatus.SUSPENDED])
def test_a_recharge_is_never_due_unless_auto_recharge_is_active(status: RechargeStatus) -> None:
    settings = RechargeSettings(status=status, amount_micros=100_000_000, trigger_micros=20_000_000)
    assert not settings.is_due(0)


def test_default_settings_are_disabled_and_never_due() -> None:
    settings = RechargeSettings()
    assert settings.status is RechargeStatus.DISABLED
    assert not settings.is_due(0)


def test_a_new_card_lifts_a_suspension_and_resets_failures() -> None:
    settings = RechargeSettings(status=RechargeStatus.SUSPENDED, amount_micros=100_000_000,
                                trigger_micros=20_000_000, consecutive_failures=3)
    later = NOW + timedelta(hours=1)
    settings.card_replaced(later)
    assert settings.status is RechargeStatus.ACTIVE
    assert settings.consecutive_failures == 0
    assert settings.updated_at == later
    assert settings.is_due(0)


def test_a_new_card_starts_its_own_count_of_failures() -> None:
    settings = RechargeSettings(status=RechargeStatus.ACTIVE, amount_micros=100_000_000, trigger_micros=20_000_000,
                                consecutive_failures=2, updated_at=NOW)
    settings.card_replaced(NOW + timedelta(hours=1))
    assert settings.status is RechargeStatus.ACTIVE
    assert settings.consecutive_failures == 0
    assert settings.updated_at == NOW  # the settings themselves did not change


def test_a_new_card_leaves_disabled_auto_recharge_disabled() -> None:
    settings = RechargeSettings(status=RechargeStatus.DISABLED, amount_micros=100_000_000,
                                trigger_micros=20_000_000, updated_at=NOW)
    settings.card_replaced(NOW + timedelta(hours=1))
    assert settings.status is RechargeStatus.DISABLED
    assert settings.updated_at == NOW


def attempt() -> RechargeAttempt:
    return new_attempt(7, save("100", "20"), "SEK", NOW, triggered_by_entry_id=42)


def test_a_new_attempt_is_pending_for_the_configured_amount() -> None:
    a = attempt()
    assert a.status is AttemptStatus.PENDING
    assert a.account_id == 7
    assert a.amount_micros == 100_000_000
    assert str(a.amount) == "100.00 SEK"
    assert a.not_before == NOW
    assert a.triggered_by_entry_id == 42
    assert a.settled_at is None


def test_a_new_attempt_may_wait_for_a_back_off() -> None:
    later = NOW + timedelta(seconds=60)
    assert new_attempt(7, save("100", "20"), "SEK", NOW, not_before=later).not_before == later


def test_a_successful_attempt_records_the_transaction_and_releases_its_lease() -> None:
    a = attempt()
    a.lease_expires_at = NOW + timedelta(seconds=30)
    a.succeed(transaction_id=99, at=NOW + timedelta(seconds=1))
    assert a.status is AttemptStatus.SUCCEEDED
    assert a.transaction_id == 99
    assert a.settled_at == NOW + timedelta(seconds=1)
    assert a.lease_expires_at is None
    assert a.failure_reason is None


def test_a_failed_attempt_records_its_reason() -> None:
    a = attempt()
    a.fail("card_declined", at=NOW)
    assert a.status is AttemptStatus.FAILED
    assert a.failure_reason == "card_declined"
    assert a.settled_at == NOW
    assert a.transaction_id is None


@pytest.mark.parametrize(("first", "second"), [("succeed", "succeed"), ("succeed", "fail"), ("fail", "succeed"),
                                               ("fail", "fail")])
def test_an_attempt_cannot_be_settled_twice(first: str, second: str) -> None:
    a = attempt()
    settle = {"succeed": lambda: a.succeed(1, NOW), "fail": lambda: a.fail("declined", NOW)}
    settle[first]()
    status = a.status
    with pytest.raises(ValueError, match="already"):
        settle[second]()
    assert a.status is status


def test_a_cancelled_attempt_may_still_succeed_once_but_a_declined_one_may_not() -> None:
    cancelled = attempt()
    cancelled.cancel("account closed", NOW)
    assert (cancelled.status, cancelled.failure_reason) == (AttemptStatus.FAILED, "cancelled: account closed")
    with pytest.raises(ValueError, match="already"):
        cancelled.fail("declined", NOW)
    cancelled.succeed(1, NOW + timedelta(seconds=5))  # the charge of a worker whose lease ran out went through
    assert (cancelled.status, cancelled.failure_reason, cancelled.transaction_id) == (AttemptStatus.SUCCEEDED, None, 1)
    with pytest.raises(ValueError, match="already"):
        cancelled.succeed(2, NOW)
    declined = attempt()
    declined.fail("card declined", NOW)
    with pytest.raises(ValueError, match="already"):
        declined.succeed(1, NOW)


def test_an_attempt_may_be_settled_while_pending_and_once_cancelled_only_by_a_success() -> None:
    pending, cancelled, declined, succeeded = attempt(), attempt(), attempt(), attempt()
    cancelled.cancel("account closed", NOW)
    declined.fail("card declined", NOW)
    succeeded.succeed(1, NOW)
    assert [(a.can_settle(True), a.can_settle(False)) for a in (pending, cancelled, declined, succeeded)] == [
        (True, True), (True, False), (False, False), (False, False)]


def test_an_attempt_was_claimed_from_its_first_lease_until_it_is_settled() -> None:
    a = attempt()
    assert not a.was_claimed
    a.lease_expires_at = NOW + timedelta(seconds=30)
    assert a.was_claimed  # and stays so after the lease: its worker may have charged it before dying
    a.succeed(1, NOW)
    assert not a.was_claimed


def test_an_unclaimed_attempt_follows_saved_settings_and_is_due_at_once() -> None:
    a = new_attempt(7, save("100", "20"), "SEK", NOW, not_before=NOW + timedelta(seconds=600))
    a.follow(save("50", "20"))
    # due since it was created: a worker takes it whatever its clock says, and whatever the creating host's said
    assert (a.amount_micros, a.not_before) == (50_000_000, NOW)
    a.follow(save("70", "20"))
    assert a.not_before == NOW


def test_a_claimed_attempt_keeps_the_amount_it_was_charged_with() -> None:
    a = attempt()
    a.lease_expires_at = NOW + timedelta(seconds=30)
    with pytest.raises(AssertionError):
        a.follow(save("50", "20"))
    assert a.amount_micros == 100_000_000


def _declined(settings: RechargeSettings, *, counts: bool = True, account_open: bool = True
              ) -> tuple[RechargeAttempt, RechargeAttempt | None]:
    attempt = new_attempt(1, settings, "SEK", NOW)
    following = after_decline(attempt, settings, "card declined", NOW, counts=counts, account_open=account_open,
                              policy=Policy())
    return attempt, following


def test_declines_wait_the_back_off_then_suspend_auto_recharge_after_the_third() -> None:
    settings = save("100", "20")
    waits = []
    for _ in range(3):
        attempt, following = _declined(settings)
        assert (attempt.status, attempt.failure_reason) == (AttemptStatus.FAILED, "card declined")
        waits.append(following.not_before - NOW if following else None)
    assert waits == [timedelta(seconds=60), timedelta(seconds=600), None]
    assert (settings.status, settings.consecutive_failures) == (RechargeStatus.SUSPENDED, 3)


def test_a_decline_on_former_terms_counts_nothing_and_the_next_try_is_due_at_once() -> None:
    settings = save("100", "20")
    _, following = _declined(settings, counts=False)
    assert following is not None
    assert following.not_before == NOW
    assert (settings.status, settings.consecutive_failures) == (RechargeStatus.ACTIVE, 0)


@pytest.mark.parametrize("status", [RechargeStatus.DISABLED, RechargeStatus.SUSPENDED])
def test_a_decline_starts_no_next_attempt_unless_auto_recharge_is_active(status: RechargeStatus) -> None:
    settings = save("100", "20")
    settings.status = status
    assert _declined(settings, counts=False)[1] is None


def test_a_decline_on_a_closed_account_starts_no_next_attempt_but_still_counts() -> None:
    settings = save("100", "20")
    assert _declined(settings, account_open=False)[1] is None
    assert settings.consecutive_failures == 1
