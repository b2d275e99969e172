"""Mutation inputs of the contract."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

import credits_graphql.api.enums  # noqa: F401  (names the enums)
from credits_graphql.domain import ledger


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
class CloseAccountInput:
    account_id: strawberry.ID
