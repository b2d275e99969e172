"""Deployment policy: what may be charged to a payment method, what usage may be, and the retry schedule."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.money import MAX_AMOUNT_MICROS
from credits_graphql.domain.policy import Policy, usage_micros

FIELD = ["input", "amount"]


def charge(amount: str, currency: str = "SEK", policy: Policy | None = None) -> int:
    return (policy or Policy()).charge_micros(Decimal(amount), currency, ErrorCode.INVALID_AMOUNT, FIELD)


@pytest.mark.parametrize(
    ("amount", "currency", "micros"),
    [
        ("10", "SEK", 10_000_000),
        ("12.50", "USD", 12_500_000),
        ("99.99", "EUR", 99_990_000),
        ("100000", "SEK", 100_000_000_000),
        ("1500", "JPY", 1_500_000_000),
        ("1500.00", "JPY", 1_500_000_000),
        ("10.000", "SEK", 10_000_000),
    ],
)
def test_a_charge_that_fits_the_minor_unit_and_the_bounds_is_converted_exactly(
        amount: str, currency: str, micros: int) -> None:
    assert charge(amount, currency) == micros


@pytest.mark.parametrize(("amount", "currency"), [("10.005", "SEK"), ("12.501", "USD"), ("1500.5", "JPY"),
                                                   ("10.1", "JPY"), ("10.0000001", "EUR")])
def test_a_charge_finer_than_the_currency_minor_unit_is_refused(amount: str, currency: str) -> None:
    with pytest.raises(RuleViolation) as caught:
        charge(amount, currency)
    assert caught.value.code is ErrorCode.INVALID_AMOUNT
    assert caught.value.field == ("input", "amount")
    assert "decimals" in caught.value.message


@pytest.mark.parametrize("amount", ["9.99", "0", "-10", "100000.01", "100001", "1000000"])
def test_a_charge_outside_the_default_bounds_is_refused(amount: str) -> None:
    with pytest.raises(RuleViolation) as caught:
        charge(amount)
    assert caught.value.code is ErrorCode.INVALID_AMOUNT
    assert caught.value.field == ("input", "amount")
    assert "between 10 and 100000" in caught.value.message


def test_the_purchase_bounds_are_inclusive() -> None:
    assert charge("10.00") == 10_000_000
    assert charge("100000.00") == 100_000_000_000


def test_a_charge_violation_carries_the_callers_code_and_field() -> None:
    with pytest.raises(RuleViolation) as caught:
        Policy().charge_micros(Decimal("5"), "SEK", ErrorCode.INVALID_RECHARGE_SETTINGS, ["input", "rechargeAmount"])
    assert caught.value.code is ErrorCode.INVALID_RECHARGE_SETTINGS
    assert caught.value.field == ("input", "rechargeAmount")


def test_a_deployment_may_change_the_purchase_bounds() -> None:
    policy = Policy(min_purchase=Decimal(1), max_purchase=Decimal(50))
    assert charge("1", policy=policy) == 1_000_000
    assert charge("50", policy=policy) == 50_000_000
    for amount in ("0.99", "50.01"):
        with pytest.raises(RuleViolation):
            charge(amount, policy=policy)


@pytest.mark.parametrize(
    ("amount", "micros"),
    [("0.000001", 1), ("0.0125", 12_500), ("3", 3_000_000), ("1000000000", MAX_AMOUNT_MICROS),
     ("2.500000", 2_500_000)],
)
def test_usage_is_converted_to_micros_exactly(amount: str, micros: int) -> None:
    assert usage_micros(Decimal(amount), "SEK") == micros


@pytest.mark.parametrize(("amount", "reason"), [("0", "greater than zero"), ("-1", "greater than zero"),
                                                 ("-0.000001", "greater than zero"),
                                                 ("0.0000001", "more than 6 decimals"),
                                                 ("1.1234567", "more than 6 decimals"),
                                                 ("1000000000.000001", "may not exceed")])
def test_usage_that_is_not_positive_too_precise_or_too_large_is_refused(amount: str, reason: str) -> None:
    with pytest.raises(RuleViolation) as caught:
        usage_micros(Decimal(amount), "SEK")
    assert caught.value.code is ErrorCode.INVALID_AMOUNT
    assert caught.value.field == ("input", "amount")
    assert reason in caught.value.message


def test_usage_need_not_fit_the_currency_minor_unit() -> None:
    assert usage_micros(Decimal("0.5"), "JPY") == 500_000


def test_the_default_retry_schedule_waits_a_minute_then_ten_minutes_then_suspends() -> None:
    policy = Policy()
    assert policy.max_attempts == 3
    assert policy.retry_delay(1) == timedelta(seconds=60)
    assert policy.retry_delay(2) == timedelta(seconds=600)
    assert policy.retry_delay(3) is None
    assert policy.retry_delay(4) is None


def test_a_retry_delay_is_only_asked_after_a_failure() -> None:
    with pytest.raises(ValueError, match="after a failure"):
        Policy().retry_delay(0)


def test_a_custom_retry_schedule_is_followed() -> None:
    policy = Policy(retry_delays=(timedelta(seconds=5), timedelta(seconds=30)))
    assert policy.retry_delay(1) == timedelta(seconds=5)
    assert policy.retry_delay(2) == timedelta(seconds=30)
    assert policy.retry_delay(3) is None


@pytest.mark.parametrize(("amount", "says"), [("0.0000001", "0.0000001 SEK has more decimals"),
                                              ("0.00000010", "0.00000010 SEK has more decimals")])
def test_a_refused_amount_is_named_as_the_client_wrote_it_never_in_exponent_notation(amount: str, says: str) -> None:
    with pytest.raises(RuleViolation) as refused:
        charge(amount)
    assert says in refused.value.message
    with pytest.raises(RuleViolation) as out_of_bounds:
        charge("1", policy=Policy(min_purchase=Decimal("1E+1"), max_purchase=Decimal("1E+3")))
    assert "between 10 and 1000 SEK" in out_of_bounds.value.message
