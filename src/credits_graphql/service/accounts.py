"""Account lifecycle: open, close, payment method and auto-recharge settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from credits_graphql.domain import recharge
from credits_graphql.domain.errors import ErrorCode, RuleViolation, account_not_found
from credits_graphql.domain.ledger import Account, AccountStatus, PaymentMethod
from credits_graphql.domain.money import CURRENCY_MINOR_UNITS, is_known_currency
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import UnknownPaymentToken
from credits_graphql.service.transient import retry_on_conflict
from credits_graphql.service.unit_of_work import UnitOfWork

MAX_NAME_LENGTH = 200
MAX_TOKEN_LENGTH = 255

NO_LONGER_DUE = "balance no longer below the trigger"
"""Why a pending attempt is cancelled when the balance rose to its trigger or above before it was charged."""


@dataclass(frozen=True, slots=True)
class CreateAccount:
    name: str
    currency_code: str
    payment_token: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRechargeSettings:
    account_id: int
    enabled: bool
    recharge_amount: Decimal | None = None
    trigger_balance: Decimal | None = None


@retry_on_conflict
async def create_account(deps: Deps, org_id: int, cmd: CreateAccount) -> Account:
    name = cmd.name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise RuleViolation(ErrorCode.INVALID_INPUT,
                            f"The name must be 1 to {MAX_NAME_LENGTH} printable characters.", ["input", "name"])
    currency = cmd.currency_code.strip().upper()
    if not is_known_currency(currency):
        raise RuleViolation(ErrorCode.INVALID_INPUT, f"{cmd.currency_code[:10]!r} is not an ISO 4217 currency code "
                            f"this service supports ({', '.join(sorted(CURRENCY_MINOR_UNITS))}).",
                            ["input", "currencyCode"])
    now = deps.clock()
    payment_method = None
    if cmd.payment_token is not None:
        payment_method = await _payment_method(deps, cmd.payment_token)
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.add(Account(
            id=0, org_id=org_id, name=name, currency=currency, status=AccountStatus.ACTIVE,
            balance_micros=0, created_at=now, payment_method=payment_method,
        ))
        await uow.commit()
    return account


@retry_on_conflict
async def close_account(deps: Deps, org_id: int, account_id: int) -> Account:
    """Stops all money movement. Closing a closed account changes nothing and is not an error."""
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, account_id)
        if account.is_closed:
            return account
        account.status = AccountStatus.CLOSED
        account.recharge.turn_off(deps.clock())
        await _cancel_idle_pending(uow, account, "account closed", deps.clock())
        await uow.accounts.save(account)
        await uow.commit()
    return account


@retry_on_conflict
async def update_payment_method(deps: Deps, org_id: int, account_id: int, token: str) -> Account:
    """Replaces the card. A suspended auto-recharge resumes, and a waiting retry is due at once."""
    payment_method = await _payment_method(deps, token)
    now = deps.clock()
    created = False
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, account_id)
        account.ensure_open()
        account.payment_method = PaymentMethod(payment_method.token, payment_method.brand,
                                               payment_method.last4, now)
        account.recharge.card_replaced(now)
        pending = await uow.attempts.pending(account.id, for_update=True)
        if pending is not None and not pending.was_claimed and pending.not_before > pending.created_at:
            pending.make_due()
            await uow.attempts.save(pending)
        created = await start_recharge_if_due(uow, account, now)
        await uow.accounts.save(account)
        await uow.commit()
    if created or pending is not None:
        deps.recharge_created()
    return account


@retry_on_conflict
async def update_recharge_settings(deps: Deps, org_id: int, cmd: UpdateRechargeSettings) -> Account:
    now = deps.clock()
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, cmd.account_id)
        account.ensure_open()
        account.recharge = recharge.configure(
            account.recharge, enabled=cmd.enabled, recharge_amount=cmd.recharge_amount,
            trigger_balance=cmd.trigger_balance, currency=account.currency, policy=deps.policy,
            has_payment_method=account.payment_method is not None, at=now,
        )
        if cmd.enabled:
            due = await _pending_follows_settings(uow, account, now) or await start_recharge_if_due(uow, account, now)
        else:
            due = False
            await _cancel_idle_pending(uow, account, "auto-recharge disabled", now)
        await uow.accounts.save(account)
        await uow.commit()
    if due:
        deps.recharge_created()
    return account


async def start_recharge_if_due(uow: UnitOfWork, account: Account, now: datetime,
                                triggered_by_entry_id: int | None = None) -> bool:
    """Creates a PENDING attempt when one is due and none is pending (the caller holds the account lock)."""
    if not account.recharge.is_due(account.balance_micros):
        return False
    if await uow.attempts.pending(account.id) is not None:
        return False
    await uow.attempts.add(recharge.new_attempt(account.id, account.recharge, account.currency, now,
                                                triggered_by_entry_id=triggered_by_entry_id))
    return True


async def _pending_follows_settings(uow: UnitOfWork, account: Account, now: datetime) -> bool:
    """A pending attempt no worker has claimed takes the saved settings: their amount, due at once, or cancelled
    when the balance is no longer below their trigger. Returns whether it is due now."""
    pending = await uow.attempts.pending(account.id, for_update=True)
    if pending is None or pending.was_claimed:
        return False
    due = account.recharge.is_due(account.balance_micros)
    if due:
        pending.follow(account.recharge)
    else:
        pending.cancel(NO_LONGER_DUE, now)
    await uow.attempts.save(pending)
    return due


async def _cancel_idle_pending(uow: UnitOfWork, account: Account, reason: str, now: datetime) -> None:
    """A pending attempt no worker has claimed is cancelled. A claimed one is left to the workers, whose charge
    may have gone through even if the worker died: a worker looks it up, credits it if it did, and cancels the
    attempt if it did not (service/recharges.py).

    The row lock makes this wait for a worker that is claiming the attempt right now, and see its lease."""
    pending = await uow.attempts.pending(account.id, for_update=True)
    if pending is not None and not pending.was_claimed:
        pending.cancel(reason, now)
        await uow.attempts.save(pending)


async def lock_account(uow: UnitOfWork, org_id: int, account_id: int) -> Account:
    account = await uow.accounts.get(org_id, account_id, for_update=True)
    if account is None:
        raise account_not_found()
    return account


async def _payment_method(deps: Deps, token: str) -> PaymentMethod:
    field = ["input", "paymentMethod", "token"]
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise RuleViolation(ErrorCode.INVALID_INPUT, "Unknown payment token.", field)
    try:
        card = await deps.gateway.describe(token)
    except UnknownPaymentToken:
        raise RuleViolation(ErrorCode.INVALID_INPUT, "Unknown payment token.", field) from None
    return PaymentMethod(token=token, brand=card.brand, last4=card.last4, updated_at=deps.clock())
