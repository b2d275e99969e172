"""Mutation inputs of the contract."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import strawberry
from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryOptional, StrawberryType, get_object_definition
from strawberry.types.enum import has_enum_definition

import credits_graphql.api.enums  # noqa: F401  (names the enums)
from credits_graphql.domain import ledger

_ABSENT = object()
T = TypeVar("T")


def _built_from_parsed_leaves(cls: type[T]) -> type[T]:
    """Strawberry converts each field of each input value by resolving its type anew, which cost more than
    all the rest of a 1,000-item usage batch. graphql-core has parsed scalars and enums already, so fields
    of those types are passed on as they are; any other field is converted by Strawberry as usual."""
    definition = get_object_definition(cls, strict=True)
    plan: list[tuple[str, str, StrawberryType | type, bool]] = []

    def build(origin: type[T], value: Mapping[str, Any], context: InputContext) -> T:
        if not plan:
            for field in definition.fields:
                type_ = field.resolve_type(type_definition=definition)
                inner = type_.of_type if isinstance(type_, StrawberryOptional) else type_
                leaf = inner is not GlobalID and (has_enum_definition(inner)
                                                  or is_scalar(inner, context.scalar_registry))
                plan.append((context.config.name_converter.from_field(field), field.python_name, type_, leaf))
        kwargs = {python_name: given if leaf or given is None else context.convert(given, type_, name)
                  for name, python_name, type_, leaf in plan if (given := value.get(name, _ABSENT)) is not _ABSENT}
        return origin(**kwargs)

    definition.from_input = build
    return cls




@strawberry.input
class PaymentMethodInput:
    token: str = strawberry.field(description='Token from the payment gateway. The sandbox gateway knows '
                                  '"tok_visa" and "tok_mastercard" (succeed) and "tok_chargeDeclined" (declined).')


@strawberry.input
class CreateAccountInput:
    name: str
    currency_code: str = strawberry.field(description="ISO 4217 code; fixed for the life of the account.")
    payment_method: PaymentMethodInput | None = None


@strawberry.input
class AddFundsInput:
    account_id: strawberry.ID
    amount: Decimal
    idempotency_key: str = strawberry.field(
        description="Same key and same input returns the first result and moves no money again.")


@strawberry.input
class UpdateRechargeSettingsInput:
    account_id: strawberry.ID
    enabled: bool
    recharge_amount: Decimal | None = strawberry.field(default=None, description="Required when enabled.")
    trigger_balance: Decimal | None = strawberry.field(default=None, description="Required when enabled.")


@strawberry.input
class UpdatePaymentMethodInput:
    account_id: strawberry.ID
    payment_method: PaymentMethodInput


@_built_from_parsed_leaves
@strawberry.input
class RecordUsageInput:
    account_id: strawberry.ID
    service: ledger.CreditService
    amount: Decimal = strawberry.field(description="Credits consumed, > 0, in the account currency.")
    idempotency_key: str
    minutes: int | None = None
    reference: str | None = None
    occurred_at: datetime | None = strawberry.field(default=None,
                                                    description="When the usage happened; defaults to now.")


@strawberry.input
class RecordUsageBatchInput:
    items: list[RecordUsageInput] = strawberry.field(
        description="1 to 1000 usage reports, applied in this order; each has its own idempotency key.")


@strawberry.input
class CloseAccountInput:
    account_id: strawberry.ID
