"""Object types of the contract, each a thin view over a domain object."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry import relay
from strawberry.types import Info

import credits_graphql.api.enums  # noqa: F401  (names the enums)
from credits_graphql.api import connections
from credits_graphql.api.context import Context
from credits_graphql.api.ids import node_id, node_id_field
from credits_graphql.domain import errors, ledger, money, recharge
from credits_graphql.service import queries


@strawberry.type
class Money:
    amount: Decimal
    currency_code: str = strawberry.field(description='ISO 4217 code, e.g. "SEK", "USD", "EUR".')

    @classmethod
    def of(cls, value: money.Money) -> Money:
        return cls(amount=value.amount, currency_code=value.currency)

    @classmethod
    def maybe(cls, micros: int | None, currency: str) -> Money | None:
        return None if micros is None else cls.of(money.Money(micros, currency))


@strawberry.type
class UserError:
    """A business-rule failure. The mutation changed nothing when it returns one."""

    field: list[str] | None = strawberry.field(
        description='Path to the offending input field, e.g. ["input", "rechargeAmount"].')
    message: str
    code: errors.ErrorCode

    @classmethod
    def of(cls, violation: errors.RuleViolation) -> UserError:
        return cls(field=list(violation.field) if violation.field else None, message=violation.message,
                   code=violation.code)


@strawberry.type
class PaymentMethod:
    brand: str = strawberry.field(description='e.g. "visa".')
    last4: str
    updated_at: datetime


@strawberry.type
class RechargeSettings:
    status: recharge.RechargeStatus
    recharge_amount: Money | None = strawberry.field(description="Added to the balance with each recharge.")
    trigger_balance: Money | None = strawberry.field(
        description="A recharge triggers when the balance falls strictly below this amount.")
    updated_at: datetime | None


@strawberry.type(name="RechargeAttempt")
class RechargeAttemptNode(relay.Node):
    id: strawberry.ID = node_id_field()
    row_id: relay.NodeID[int]
    model: strawberry.Private[recharge.RechargeAttempt]

    @classmethod
    def of(cls, attempt: recharge.RechargeAttempt) -> RechargeAttemptNode:
        assert attempt.id is not None
        return cls(id=node_id(cls, attempt.id), row_id=attempt.id, model=attempt)

    @strawberry.field
    def status(self) -> recharge.AttemptStatus:
        return self.model.status

    @strawberry.field
    def amount(self) -> Money:
        return Money.of(self.model.amount)

    @strawberry.field(description="Why it FAILED: the gateway's decline or error, or for a cancelled attempt "
                                  "`cancelled: ` and why (auto-recharge disabled or suspended, the account closed, "
                                  "no payment method, the balance no longer below the trigger).")
    def failure_reason(self) -> str | None:
        return self.model.failure_reason

    @strawberry.field(description="True for an attempt FAILED because it was cancelled before any charge, not "
                                  "declined: no payment failed, and it does not count towards suspension.")
    def cancelled(self) -> bool:
        return self.model.was_cancelled

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @strawberry.field(description="The earliest time the attempt is charged (later after a failure: the back-off).")
    def not_before(self) -> datetime:
        return self.model.not_before

    @strawberry.field(description="When the attempt SUCCEEDED or FAILED.")
    def settled_at(self) -> datetime | None:
        return self.model.settled_at

    @strawberry.field(description="The ledger entry that credited the funds, once SUCCEEDED.")
    async def transaction(self, info: Info[Context, None]) -> TransactionNode | None:
        if self.model.transaction_id is None:
            return None
        entry = await info.context.loaders.entries.load(self.model.transaction_id)
        return TransactionNode.of(entry) if entry is not None else None

    @strawberry.field
    async def account(self, info: Info[Context, None]) -> AccountNode:
        return await AccountNode.load(info, self.model.account_id)


@strawberry.type
class Balance:
    model: strawberry.Private[ledger.Account]
    as_of: datetime

    @strawberry.field
    def account(self) -> AccountNode:
        return AccountNode.of(self.model)

    @strawberry.field
    def available(self) -> Money:
        return Money.of(self.model.balance)

    @strawberry.field(description="True when auto-recharge is ACTIVE and available < triggerBalance.")
    def below_trigger(self) -> bool:
        return self.model.recharge.is_due(self.model.balance_micros)

    @strawberry.field(description="A recharge attempt that is still PENDING, if any.")
    async def pending_recharge(self, info: Info[Context, None]) -> RechargeAttemptNode | None:
        attempt = await info.context.loaders.pending_attempts.load(self.model.id)
        return RechargeAttemptNode.of(attempt) if attempt is not None else None


@strawberry.type(name="Account")
class AccountNode(relay.Node):
    id: strawberry.ID = node_id_field()
    row_id: relay.NodeID[int]
    model: strawberry.Private[ledger.Account]

    @classmethod
    def of(cls, account: ledger.Account) -> AccountNode:
        return cls(id=node_id(cls, account.id), row_id=account.id, model=account)

    @classmethod
    async def load(cls, info: Info[Context, None], account_id: int) -> AccountNode:
        account = await info.context.loaders.accounts.load(account_id)
        if account is None:  # rows of one organization only ever point at that organization's accounts
            raise LookupError(f"account {account_id} vanished")
        return cls.of(account)

    @strawberry.field
    def name(self) -> str:
        return self.model.name

    @strawberry.field
    def currency_code(self) -> str:
        return self.model.currency

    @strawberry.field
    def status(self) -> ledger.AccountStatus:
        return self.model.status

    @strawberry.field
    def balance(self, info: Info[Context, None]) -> Balance:
        return Balance(model=self.model, as_of=info.context.deps.clock())

    @strawberry.field
    def recharge_settings(self) -> RechargeSettings:
        settings, currency = self.model.recharge, self.model.currency
        return RechargeSettings(
            status=settings.status,
            recharge_amount=Money.maybe(settings.amount_micros, currency),
            trigger_balance=Money.maybe(settings.trigger_micros, currency),
            updated_at=settings.updated_at,
        )

    @strawberry.field
    def payment_method(self) -> PaymentMethod | None:
        method = self.model.payment_method
        if method is None:
            return None
        return PaymentMethod(brand=method.brand, last4=method.last4,
                             updated_at=method.updated_at)

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at

    @strawberry.field(description="Newest first.")
    async def transactions(self, info: Info[Context, None], first: int | None = None, after: str | None = None,
                           kinds: list[ledger.EntryKind] | None = None) -> connections.Connection[TransactionNode]:
        return await transactions_of(info, self.model, first, after, kinds)

    @strawberry.field(description="Newest first.")
    async def recharge_attempts(self, info: Info[Context, None], first: int | None = None,
                                after: str | None = None) -> connections.Connection[RechargeAttemptNode]:
        listed = f"rechargeAttempts.{self.model.id}"
        deps, limit, before = info.context.deps, connections.page_size(first), connections.after_id(after, listed)
        page = await queries.attempts_page(deps, self.model.id, before, limit)
        return connections.build(page.items, page.has_next, after, listed, _row_id, RechargeAttemptNode.of,
                                 lambda: queries.count_attempts(deps, self.model.id))


@strawberry.type(name="Transaction", description="An immutable ledger entry.")
class TransactionNode(relay.Node):
    id: strawberry.ID = node_id_field()
    row_id: relay.NodeID[int]
    model: strawberry.Private[ledger.LedgerEntry]

    @classmethod
    def of(cls, entry: ledger.LedgerEntry) -> TransactionNode:
        assert entry.id is not None
        return cls(id=node_id(cls, entry.id), row_id=entry.id, model=entry)

    @strawberry.field
    async def account(self, info: Info[Context, None]) -> AccountNode:
        return await AccountNode.load(info, self.model.account_id)

    @strawberry.field
    def kind(self) -> ledger.EntryKind:
        return self.model.kind

    @strawberry.field(description="Signed: positive credits the account, negative debits it.")
    def amount(self) -> Money:
        return Money.of(self.model.amount)

    @strawberry.field(description="The balance right after this entry.")
    def balance_after(self) -> Money:
        return Money.of(self.model.balance_after)

    @strawberry.field(description="Set for USAGE.")
    def service(self) -> ledger.CreditService | None:
        return self.model.service

    @strawberry.field(description="Billable minutes, for USAGE when reported.")
    def minutes(self) -> int | None:
        return self.model.minutes

    @strawberry.field(description="Caller's free-form reference (call id, invoice number).")
    def reference(self) -> str | None:
        return self.model.reference

    @strawberry.field
    def occurred_at(self) -> datetime:
        return self.model.occurred_at

    @strawberry.field
    def created_at(self) -> datetime:
        return self.model.created_at


async def transactions_of(info: Info[Context, None], account: ledger.Account, first: int | None, after: str | None,
                          kinds: list[ledger.EntryKind] | None) -> connections.Connection[TransactionNode]:
    # One list whatever `kinds`: a cursor marks a place in the account's history, which a filter only thins.
    listed = f"transactions.{account.id}"
    deps, limit, before = info.context.deps, connections.page_size(first), connections.after_id(after, listed)
    page = await queries.entries_page(deps, account.id, kinds, before, limit)

    async def total() -> int:  # the account as this request read it counts its entries by kind: no statement
        return account.count_entries(kinds)

    return connections.build(page.items, page.has_next, after, listed, _row_id, TransactionNode.of, total)


def _row_id(row: ledger.LedgerEntry | recharge.RechargeAttempt) -> int:
    assert row.id is not None
    return row.id
