"""Mutation payloads: the result, or `userErrors` and nothing changed."""

from __future__ import annotations

import strawberry

from credits_graphql.api.types import AccountNode, RechargeAttemptNode, TransactionNode, UserError


@strawberry.type
class CreateAccountPayload:
    account: AccountNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CloseAccountPayload:
    account: AccountNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class AddFundsPayload:
    transaction: TransactionNode | None = None
    account: AccountNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpdateRechargeSettingsPayload:
    account: AccountNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpdatePaymentMethodPayload:
    account: AccountNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RecordUsagePayload:
    transaction: TransactionNode | None = None
    account: AccountNode | None = None
    triggered_recharge: RechargeAttemptNode | None = strawberry.field(
        default=None, description="The recharge this usage triggered, if it triggered one.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type(description="One item of a batch: its transaction, or its userErrors and nothing recorded "
                 "for it.")
class RecordUsageResult:
    transaction: TransactionNode | None = None
    account: AccountNode | None = strawberry.field(default=None, description="The account after the batch.")
    triggered_recharge: RechargeAttemptNode | None = strawberry.field(
        default=None, description="The recharge this item's usage triggered, if it triggered one.")
    user_errors: list[UserError] = strawberry.field(
        default_factory=list, description='Paths name the item, e.g. ["input", "items", "3", "amount"].')


@strawberry.type
class RecordUsageBatchPayload:
    results: list[RecordUsageResult] = strawberry.field(description="One per item, in the order of the items.")
