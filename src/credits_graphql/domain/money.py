"""Exact money: amounts are integers of micro-units (6 fractional digits), never floats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal

LEDGER_SCALE = 6
MICROS_PER_UNIT = 10**LEDGER_SCALE
# One amount of at most a billion units keeps balances far inside a signed 64-bit column.
MAX_AMOUNT_MICROS = 10**9 * MICROS_PER_UNIT
# The most an account may hold: funds that would take the balance above it are refused before the card is charged.
# It leaves room in a signed 64-bit column (9.2e18 micros) for over 8,000 of the largest purchases in flight at once,
# whose credits are never refused once charged.
MAX_BALANCE_MICROS = 10**12 * MICROS_PER_UNIT

_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
MAX_DECIMAL_TEXT = 64
# Exact for every decimal parse_plain_decimal accepts: Decimal's default context rounds to 28 digits, which
# would take "0.9999999999999999999999999999999" for 1.
_EXACT = Context(prec=MAX_DECIMAL_TEXT + LEDGER_SCALE)

# ISO 4217 codes and their minor units. Codes absent here are refused at account creation. A code added here must
# wait for a release after the one that adds it before accounts use it: an older process, still running during a
# rolling upgrade or after a rollback, fails on an account in a currency it does not know.
CURRENCY_MINOR_UNITS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BGN": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2, "CZK": 2,
    "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0,
    "JPY": 0, "KRW": 0, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "PHP": 2, "PLN": 2, "RON": 2,
    "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0,
    "ZAR": 2,
}  # fmt: skip


class InvalidDecimal(ValueError):
    """Text that is not a plain decimal number."""


def parse_plain_decimal(text: str) -> Decimal:
    """Parses `-?digits[.digits]`; anything else (exponent, NaN, spaces, floats) is refused."""
    if len(text) > MAX_DECIMAL_TEXT:
        raise InvalidDecimal(f"expected at most {MAX_DECIMAL_TEXT} characters, got {len(text)}")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise InvalidDecimal('expected a plain decimal string such as "12.50"')  # GraphQL's message adds what was found
    return Decimal(text)


def format_plain_decimal(value: Decimal) -> str:
    """Formats without exponent: Decimal("1E+2") -> "100"."""
    return format(value, "f")


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_MINOR_UNITS


def minor_units(currency: str) -> int:
    return CURRENCY_MINOR_UNITS[currency]


def canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros ("100.00" -> "1E+2"), never rounded: how inputs compare."""
    return value.normalize(_EXACT)


def fractional_digits(value: Decimal) -> int:
    exponent = canonical(value).as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def to_micros(value: Decimal) -> int:
    """Exact conversion; the caller has checked `fractional_digits(value) <= LEDGER_SCALE`."""
    micros = value.scaleb(LEDGER_SCALE, _EXACT)
    if micros != micros.to_integral_value():
        raise ValueError(f"{value} has more than {LEDGER_SCALE} fractional digits")
    return int(micros)


@dataclass(frozen=True, slots=True)
class Money:
    micros: int
    currency: str

    @property
    def amount(self) -> Decimal:
        """The amount with at least the currency's minor digits and no trailing zeros beyond them."""
        sign = "-" if self.micros < 0 else ""
        whole, frac = divmod(abs(self.micros), MICROS_PER_UNIT)
        digits = f"{frac:0{LEDGER_SCALE}d}".rstrip("0").ljust(minor_units(self.currency), "0")
        return Decimal(f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}")

    def __str__(self) -> str:
        return f"{format_plain_decimal(self.amount)} {self.currency}"
