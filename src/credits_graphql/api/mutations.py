"""Mutation resolvers: translate input, call one use case, answer a payload or its userErrors."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from credits_graphql.api.audit import audited
from credits_graphql.api.context import Context
from credits_graphql.api.ids import NO_ROW, decode_id, decode_id_at
from credits_graphql.api.inputs import (
    AddFundsInput,
    CloseAccountInput,
    CreateAccountInput,
    RecordUsageBatchInput,
    RecordUsageInput,
    UpdatePaymentMethodInput,
    UpdateRechargeSettingsInput,
    check_batch_size,
)
from credits_graphql.api.payloads import (
    AddFundsPayload,
    CloseAccountPayload,
    CreateAccountPayload,
    RecordUsageBatchPayload,
    RecordUsagePayload,
    RecordUsageResult,
    UpdatePaymentMethodPayload,
    UpdateRechargeSettingsPayload,
)
from credits_graphql.api.permissions import allowed
from credits_graphql.api.types import AccountNode, RechargeAttemptNode, TransactionNode, UserError
from credits_graphql.domain.access import Action
from credits_graphql.domain.errors import RuleViolation, account_not_found
from credits_graphql.domain.ledger import Account
from credits_graphql.service import accounts, ledger, usage_batch


def _account_pk(account_id: strawberry.ID) -> int:
    decoded = decode_id(account_id, "Account")
    if decoded is None:
        raise account_not_found()
    return decoded[1]


def _item_account_pk(account_id: strawberry.ID, index: int) -> int:
    """For a batch item: an id of another type (a transaction's) names no account, which the batch answers
    ACCOUNT_NOT_FOUND as it does an account of another organization. Not an id at all: BAD_USER_INPUT, as for a
    Decimal, naming the item (one of up to 1,000)."""
    decoded = decode_id_at(account_id, f"input.items[{index}].accountId", "Account")
    return decoded[1] if decoded is not None else NO_ROW


def _item_result(outcome: usage_batch.ItemResult, index: int, accounts: dict[int, AccountNode]) -> RecordUsageResult:
    """`accounts`: the batch's account nodes, one per account (each shows the account after the batch)."""
    if isinstance(outcome, RuleViolation):
        # The item's own path: ["input", "amount"] of recordUsage is ["input", "items", "3", "amount"] here.
        inner = outcome.field[1:] if outcome.field and outcome.field[0] == "input" else outcome.field or ()
        return RecordUsageResult(user_errors=[UserError.of(RuleViolation(
            outcome.code, outcome.message, ["input", "items", str(index), *inner]))])
    triggered = RechargeAttemptNode.of(outcome.triggered_recharge) if outcome.triggered_recharge else None
    account = accounts.get(outcome.account.id)
    if account is None:
        account = accounts[outcome.account.id] = AccountNode.of(outcome.account)
    return RecordUsageResult(transaction=TransactionNode.of(outcome.entry), account=account,
                             triggered_recharge=triggered)


def _account_node(info: Info[Context, None], account: Account) -> AccountNode:
    info.context.prime_accounts([account])
    return AccountNode.of(account)


@strawberry.type
class Mutation:
    # Its event names the account it created, known only once it committed: recorded right after.
    @strawberry.mutation(extensions=[allowed(Action.MANAGE_ACCOUNTS), audited("createAccount", in_transaction=False)])
    async def create_account(self, info: Info[Context, None], input: CreateAccountInput) -> CreateAccountPayload:
        token = input.payment_method.token if input.payment_method else None
        try:
            account = await accounts.create_account(info.context.deps, info.context.org_id, accounts.CreateAccount(
                name=input.name, currency_code=input.currency_code, payment_token=token))
        except RuleViolation as violation:
            return CreateAccountPayload(user_errors=[UserError.of(violation)])
        return CreateAccountPayload(account=_account_node(info, account))

    @strawberry.mutation(extensions=[allowed(Action.MOVE_FUNDS), audited("addFunds")])
    async def add_funds(self, info: Info[Context, None], input: AddFundsInput) -> AddFundsPayload:
        try:
            done = await ledger.add_funds(info.context.deps, info.context.org_id, ledger.AddFunds(
                account_id=_account_pk(input.account_id), amount=input.amount,
                idempotency_key=input.idempotency_key, api_key_id=info.context.principal.key_id))
        except RuleViolation as violation:
            return AddFundsPayload(user_errors=[UserError.of(violation)])
        return AddFundsPayload(transaction=TransactionNode.of(done.entry), account=_account_node(info, done.account))

    @strawberry.mutation(extensions=[allowed(Action.MANAGE_ACCOUNTS), audited("updateRechargeSettings")])
    async def update_recharge_settings(self, info: Info[Context, None],
                                       input: UpdateRechargeSettingsInput) -> UpdateRechargeSettingsPayload:
        try:
            account = await accounts.update_recharge_settings(
                info.context.deps, info.context.org_id, accounts.UpdateRechargeSettings(
                    account_id=_account_pk(input.account_id), enabled=input.enabled,
                    recharge_amount=input.recharge_amount, trigger_balance=input.trigger_balance))
        except RuleViolation as violation:
            return UpdateRechargeSettingsPayload(user_errors=[UserError.of(each) for each in violation.each])
        return UpdateRechargeSettingsPayload(account=_account_node(info, account))

    @strawberry.mutation(extensions=[allowed(Action.MANAGE_ACCOUNTS), audited("updatePaymentMethod")])
    async def update_payment_method(self, info: Info[Context, None],
                                    input: UpdatePaymentMethodInput) -> UpdatePaymentMethodPayload:
        try:
            account = await accounts.update_payment_method(
                info.context.deps, info.context.org_id, _account_pk(input.account_id), input.payment_method.token)
        except RuleViolation as violation:
            return UpdatePaymentMethodPayload(user_errors=[UserError.of(violation)])
        return UpdatePaymentMethodPayload(account=_account_node(info, account))

    @strawberry.mutation(extensions=[allowed(Action.RECORD_USAGE), audited("recordUsage")])
    async def record_usage(self, info: Info[Context, None], input: RecordUsageInput) -> RecordUsagePayload:
        try:
            done = await info.context.usage.record_usage(info.context.deps, info.context.org_id, ledger.RecordUsage(
                account_id=_account_pk(input.account_id), service=input.service, amount=input.amount,
                idempotency_key=input.idempotency_key, minutes=input.minutes, reference=input.reference,
                occurred_at=input.occurred_at))
        except RuleViolation as violation:
            return RecordUsagePayload(user_errors=[UserError.of(violation)])
        triggered = RechargeAttemptNode.of(done.triggered_recharge) if done.triggered_recharge else None
        return RecordUsagePayload(transaction=TransactionNode.of(done.entry),
                                  account=_account_node(info, done.account), triggered_recharge=triggered)

    @strawberry.mutation(extensions=[allowed(Action.RECORD_USAGE), audited("recordUsageBatch")],
                         description=f"Up to {usage_batch.MAX_BATCH_ITEMS} usage reports in one call, applied in "
                         "order with recordUsage's rules; each item has its own result and userErrors, and a "
                         "refused item does not stop the others. An empty or larger batch, or a malformed id "
                         "or amount in any item: BAD_USER_INPUT and nothing recorded.")
    async def record_usage_batch(self, info: Info[Context, None],
                                 input: RecordUsageBatchInput) -> RecordUsageBatchPayload:
        check_batch_size(input.items)
        commands = [ledger.RecordUsage(
            account_id=_item_account_pk(item.account_id, index), service=item.service, amount=item.amount,
            idempotency_key=item.idempotency_key, minutes=item.minutes, reference=item.reference,
            occurred_at=item.occurred_at) for index, item in enumerate(input.items)]
        outcomes = await info.context.usage.record_usage_batch(info.context.deps, info.context.org_id, commands)
        info.context.prime_accounts({done.account.id: done.account for done in outcomes
                                     if not isinstance(done, RuleViolation)}.values())
        nodes: dict[int, AccountNode] = {}
        return RecordUsageBatchPayload(results=[_item_result(outcome, index, nodes)
                                                for index, outcome in enumerate(outcomes)])

    @strawberry.mutation(extensions=[allowed(Action.MANAGE_ACCOUNTS), audited("closeAccount")],
                         description="Stops all money movement on the account (ACCOUNT_CLOSED afterwards) and "
                         "turns auto-recharge off (DISABLED, its amounts kept); its history stays readable.")
    async def close_account(self, info: Info[Context, None], input: CloseAccountInput) -> CloseAccountPayload:
        try:
            account = await accounts.close_account(info.context.deps, info.context.org_id,
                                                   _account_pk(input.account_id))
        except RuleViolation as violation:
            return CloseAccountPayload(user_errors=[UserError.of(violation)])
        return CloseAccountPayload(account=_account_node(info, account))
