"""Mutation inputs of the contract."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar

import strawberry
from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryList, StrawberryOptional, StrawberryType, get_object_definition
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition

import credits_graphql.api.enums  # noqa: F401  (names the enums)
from credits_graphql.api.ids import bad_input
from credits_graphql.domain import ledger
from credits_graphql.service.usage_batch import MAX_BATCH_ITEMS

_ABSENT = object()
T = TypeVar("T")
Converter: TypeAlias = Callable[[Any, InputContext], Any]


def _built_from_parsed_leaves(cls: type[T]) -> type[T]:
    """Strawberry converts each field of each input value by resolving its type anew, which cost more than
    all the rest of a 1,000-item usage batch. graphql-core has parsed scalars and enums already, so fields
    of those types are passed on as they are, and a list of inputs built this way is built item by item here
    (Strawberry would first walk each item's type again); any other field is converted by Strawberry as usual."""
    definition = get_object_definition(cls, strict=True)
    plan: list[tuple[str, str, Converter | None]] = []

    def converter(name: str, type_: StrawberryType | type, context: InputContext) -> Converter | None:
        """How a field's value is converted: None when it is passed on as it is."""
        inner = type_.of_type if isinstance(type_, StrawberryOptional) else type_
        if inner is not GlobalID and (isinstance(inner, StrawberryEnumDefinition) or has_enum_definition(inner)
                                      or is_scalar(inner, context.scalar_registry)):
            return None
        item_type = inner.of_type if isinstance(inner, StrawberryList) else None
        item_definition = get_object_definition(item_type) if isinstance(item_type, type) else None
        build_item = item_definition.from_input if item_definition is not None else None
        if isinstance(item_type, type) and getattr(build_item, "from_parsed_leaves", False):
            assert build_item is not None
            return lambda items, context: [build_item(item_type, item, context) for item in items]
        return lambda value, context: context.convert(value, type_, name)

    def build(origin: type[T], value: Mapping[str, Any], context: InputContext) -> T:
        if not plan:
            for field in definition.fields:
                type_ = field.resolve_type(type_definition=definition)
                name = context.config.name_converter.from_field(field)
                plan.append((name, field.python_name, converter(name, type_, context)))
        kwargs = {python_name: given if convert is None or given is None else convert(given, context)
                  for name, python_name, convert in plan if (given := value.get(name, _ABSENT)) is not _ABSENT}
        return origin(**kwargs)

    build.from_parsed_leaves = True  # type: ignore[attr-defined]
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


@_built_from_parsed_leaves
@strawberry.input
class RecordUsageBatchInput:
    items: list[RecordUsageInput] = strawberry.field(
        description="1 to 1000 usage reports, applied in this order; each has its own idempotency key.")


def check_batch_size(items: object) -> None:
    """BAD_USER_INPUT for a batch of no item or of more than a batch holds: `items` as Strawberry built it, or as
    sent (where a single item, not in a list, is a list of one)."""
    count = len(items) if isinstance(items, list) else 1
    if not 1 <= count <= MAX_BATCH_ITEMS:
        raise bad_input(f"A batch holds 1 to {MAX_BATCH_ITEMS} items, not {count}.")


@strawberry.input
class CloseAccountInput:
    account_id: strawberry.ID
