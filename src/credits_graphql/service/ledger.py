"""Money movement on an account: funds added by hand and usage reported by the telephony platform."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.ledger import (
    Account,
    CreditService,
    EntryKind,
    LedgerEntry,
    replay,
    request_fingerprint,
)
from credits_graphql.domain.money import Money
from credits_graphql.domain.policy import usage_micros
from credits_graphql.domain.recharge import RechargeAttempt
from credits_graphql.service.accounts import lock_account, start_recharge_if_due
from credits_graphql.service.deps import Deps
from credits_graphql.service.transient import retry_on_conflict
from credits_graphql.service.unit_of_work import UnitOfWork

MAX_KEY_LENGTH = 255
MAX_REFERENCE_LENGTH = 255
MAX_MINUTES = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AddFunds:
    account_id: int
    amount: Decimal
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RecordUsage:
    account_id: int
    service: CreditService
    amount: Decimal
    idempotency_key: str
    minutes: int | None = None
    reference: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    entry: LedgerEntry
    account: Account
    triggered_recharge: RechargeAttempt | None = None


@retry_on_conflict
async def add_funds(deps: Deps, org_id: int, cmd: AddFunds) -> Recorded:
    """Charges the account's payment method and credits the amount, once per idempotency key.

    The gateway is called outside any transaction with a key derived from the account and the
    caller's key, so concurrent or retried requests charge the card at most once."""
    _check_key(cmd.idempotency_key)
    fingerprint = request_fingerprint(op="addFunds", amount=cmd.amount.normalize())
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, cmd.account_id)
        if done := await _replayed(uow, account, cmd.idempotency_key, fingerprint):
            return done
        account.ensure_open()
        micros = deps.policy.charge_micros(cmd.amount, account.currency, ErrorCode.INVALID_AMOUNT,
                                           ["input", "amount"])
        if account.payment_method is None:
            raise RuleViolation(ErrorCode.PAYMENT_METHOD_REQUIRED, "Add a payment method before adding funds.",
                                ["input", "accountId"])
        method = account.payment_method

    # Another card gets another gateway key, so a retry after a decline is not answered with that decline.
    card = request_fingerprint(token=method.token, updated_at=method.updated_at.isoformat())[:16]
    gateway_key = f"funds:{account.id}:{card}:{cmd.idempotency_key}"
    charge = await deps.gateway.charge(method.token, Money(micros, account.currency), gateway_key)
    if not charge.succeeded:
        raise RuleViolation(ErrorCode.PAYMENT_DECLINED,
                            f"The payment was declined: {charge.failure_reason or 'no reason given'}.",
                            ["input", "accountId"])

    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, cmd.account_id)
        if done := await _replayed(uow, account, cmd.idempotency_key, fingerprint):
            return done
        # The card was charged: the credit is written even if the account was closed meanwhile.
        entry = await uow.ledger.append(account.credit(
            EntryKind.FUNDS_ADDED, micros, deps.clock(), idempotency_key=cmd.idempotency_key,
            request_hash=fingerprint))
        await uow.accounts.save(account)
        await uow.commit()
    return Recorded(entry, account)


@retry_on_conflict
async def record_usage(deps: Deps, org_id: int, cmd: RecordUsage) -> Recorded:
    """Debits usage; refuses to go below zero. Starts a recharge in the same transaction when due."""
    _check_key(cmd.idempotency_key)
    if cmd.reference is not None and (len(cmd.reference) > MAX_REFERENCE_LENGTH or "\x00" in cmd.reference):
        raise RuleViolation(ErrorCode.INVALID_INPUT,
                            f"reference may have at most {MAX_REFERENCE_LENGTH} characters.",
                            ["input", "reference"])
    if cmd.minutes is not None and not 0 <= cmd.minutes <= MAX_MINUTES:
        raise RuleViolation(ErrorCode.INVALID_INPUT, "minutes may not be negative.", ["input", "minutes"])
    now = deps.clock()
    occurred_at = (cmd.occurred_at or now).astimezone(UTC)  # stored and answered in UTC, whatever was sent
    fingerprint = request_fingerprint(
        op="recordUsage", service=cmd.service, amount=cmd.amount.normalize(), minutes=cmd.minutes,
        reference=cmd.reference, occurred_at=cmd.occurred_at.isoformat() if cmd.occurred_at else None)
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, cmd.account_id)
        if done := await _replayed(uow, account, cmd.idempotency_key, fingerprint):
            return done
        account.ensure_open()
        entry = await uow.ledger.append(account.debit_usage(
            usage_micros(cmd.amount, account.currency), cmd.service, occurred_at=occurred_at, at=now,
            minutes=cmd.minutes, reference=cmd.reference, idempotency_key=cmd.idempotency_key,
            request_hash=fingerprint))
        await uow.accounts.save(account)
        triggered = None
        if await start_recharge_if_due(uow, account, now, triggered_by_entry_id=entry.id):
            triggered = await uow.attempts.pending(account.id)
        await uow.commit()
    if triggered is not None:
        deps.recharge_created()
    return Recorded(entry, account, triggered)


async def _replayed(uow: UnitOfWork, account: Account, key: str, fingerprint: str) -> Recorded | None:
    first = await uow.ledger.by_idempotency_key(account.id, key)
    if first is None:
        return None
    assert first.id is not None
    return Recorded(replay(first, fingerprint), account, await uow.attempts.triggered_by(first.id))


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise RuleViolation(ErrorCode.INVALID_INPUT,
                            f"idempotencyKey must have 1 to {MAX_KEY_LENGTH} characters.",
                            ["input", "idempotencyKey"])
