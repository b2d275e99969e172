"""Exact money: the plain decimal text format, micro-unit conversion and how amounts are shown."""

from __future__ import annotations

from decimal import Decimal

import pytest

from credits_graphql.domain.money import (
    CURRENCY_MINOR_UNITS,
    MAX_DECIMAL_TEXT,
    InvalidDecimal,
    Money,
    canonical,
    format_plain_decimal,
    fractional_digits,
    parse_plain_decimal,
    to_micros,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Decimal("0")),
        ("12.50", Decimal("12.50")),
        ("-3.25", Decimal("-3.25")),
        ("100", Decimal("100")),
        ("0.000001", Decimal("0.000001")),
        ("007.10", Decimal("7.10")),
    ],
)
def test_plain_decimal_text_parses_to_the_exact_decimal(text: str, expected: Decimal) -> None:
    value = parse_plain_decimal(text)
    assert value == expected
    assert isinstance(value, Decimal)


@pytest.mark.parametrize(
    "text",
    ["1e2", "1E2", "NaN", "nan", "Infinity", "-Infinity", "inf", " 1", "1 ", "1 000", "", "+1", ".5", "1.", "-",
     "1,5", "1.2.3", "0x10", "١٢", "1_000", "--1", "12.50\n"],
)
def test_text_that_is_not_a_plain_decimal_is_refused(text: str) -> None:
    with pytest.raises(InvalidDecimal):
        parse_plain_decimal(text)


def test_decimal_text_at_the_length_limit_is_accepted_and_one_longer_is_refused() -> None:
    longest = "1" * MAX_DECIMAL_TEXT
    assert parse_plain_decimal(longest) == Decimal(longest)
    with pytest.raises(InvalidDecimal, match=f"^expected at most {MAX_DECIMAL_TEXT} characters, got 65$"):
        parse_plain_decimal("1" * (MAX_DECIMAL_TEXT + 1))  # plain, but too long: the message says so


def test_invalid_decimal_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="plain decimal"):
        parse_plain_decimal("1e2")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("12.50"), "12.50"),
        (Decimal("-5E+3"), "-5000"),
        (Decimal("100").normalize(), "100"),
    ],
)
def test_formatting_never_prints_an_exponent(value: Decimal, text: str) -> None:
    formatted = format_plain_decimal(value)
    assert formatted == text
    assert "e" not in formatted.lower()


@pytest.mark.parametrize(
    ("micros", "currency", "amount"),
    [
        (10_000_000, "SEK", "10.00"),
        (12_500, "USD", "0.0125"),
        (1_500_000_000, "JPY", "1500"),
        (0, "EUR", "0.00"),
        (0, "JPY", "0"),
        (1, "USD", "0.000001"),
        (-2_500_000, "SEK", "-2.50"),
        (-12_500, "USD", "-0.0125"),
        (-7_000_000, "JPY", "-7"),
        (1_500_500_000, "JPY", "1500.5"),
        (123_456_789, "GBP", "123.456789"),
        (10_100_000, "EUR", "10.10"),
    ],
)
def test_money_amount_keeps_at_least_the_currency_minor_digits(micros: int, currency: str, amount: str) -> None:
    money = Money(micros, currency)
    assert format_plain_decimal(money.amount) == amount


def test_money_prints_its_amount_and_currency() -> None:
    assert str(Money(10_000_000, "SEK")) == "10.00 SEK"
    assert str(Money(-1_500_000_000, "JPY")) == "-1500 JPY"


def test_common_currencies_have_their_iso_minor_units() -> None:
    for code in ("SEK", "USD", "EUR", "GBP", "NOK", "DKK"):
        assert CURRENCY_MINOR_UNITS[code] == 2
    assert CURRENCY_MINOR_UNITS["JPY"] == 0


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (Decimal("10"), 10_000_000),
        (Decimal("10.00"), 10_000_000),
        (Decimal("0.000001"), 1),
        (Decimal("-0.0125"), -12_500),
        (Decimal("1E+2"), 100_000_000),
        (Decimal("123456789.123456"), 123_456_789_123_456),
        (Decimal("0.1000000"), 100_000),
    ],
)
def test_to_micros_is_exact(value: Decimal, micros: int) -> None:
    assert to_micros(value) == micros


def test_to_micros_refuses_more_than_six_fractional_digits() -> None:
    with pytest.raises(ValueError, match="fractional digits"):
        to_micros(Decimal("0.0000001"))


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("0.9999999999999999999999999999999", 31),  # 31 nines: Decimal's default 28-digit context would say 1
        ("10.000000000000000000000000000004", 30),
        ("123456789012345678901234567890.5", 1),
        ("10.00", 0),
        ("0.0125000", 4),
    ],
)
def test_fractional_digits_are_counted_exactly_however_many_digits_the_text_has(text: str, digits: int) -> None:
    value = parse_plain_decimal(text)
    assert fractional_digits(value) == digits
    assert canonical(value) == value


def test_to_micros_never_rounds_a_long_decimal() -> None:
    with pytest.raises(ValueError, match="fractional digits"):
        to_micros(Decimal("0.9999999999999999999999999999999"))
    assert to_micros(Decimal("123456789012345678901234567890.000001")) == 123456789012345678901234567890_000001
