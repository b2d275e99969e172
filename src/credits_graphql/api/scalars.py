"""Scalars with exact, unambiguous wire formats (Strawberry's built-ins accept floats and NaN)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as PyDecimal

import strawberry
from strawberry.types.scalar import ScalarDefinition

from credits_graphql.domain.money import format_plain_decimal, parse_plain_decimal


def _parse_decimal(value: object) -> PyDecimal:
    if not isinstance(value, str):
        raise ValueError('Decimal must be a JSON string holding a plain decimal such as "12.50"')
    return parse_plain_decimal(value)


def _serialize_decimal(value: PyDecimal) -> str:
    return format_plain_decimal(value)


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError('DateTime must be an ISO 8601 string with an offset, e.g. "2026-11-25T14:03:00+00:00"')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"DateTime {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"DateTime {value!r} has no offset; add one, e.g. +00:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"DateTime {value!r} is out of range") from None


def _serialize_datetime(value: datetime) -> str:
    """Always with microseconds: one shape for strict parsers (isoformat() leaves them out at a whole second)."""
    return value.isoformat(timespec="microseconds")


SCALARS: dict[object, ScalarDefinition] = {
    PyDecimal: strawberry.scalar(
        name="Decimal",
        description='Exact decimal number as a JSON string, e.g. "12.50" or "0.0125". Never a float; '
        "no exponent.",
        serialize=_serialize_decimal,
        parse_value=_parse_decimal,
    ),
    datetime: strawberry.scalar(
        name="DateTime",
        description='ISO 8601 date-time with offset, e.g. "2026-11-25T14:03:00+00:00"; answered in UTC with '
        'microseconds, e.g. "2026-11-25T14:03:00.000000+00:00".',
        serialize=_serialize_datetime,
        parse_value=_parse_datetime,
    ),
}
"""Replaces Strawberry's own Decimal and DateTime, so that fields annotated with the Python types use these."""
