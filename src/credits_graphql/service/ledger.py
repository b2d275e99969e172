"""Money movement on an account: funds added by hand and usage reported by the telephony platform."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.funds import FundsCharge, FundsChargeStatus
from credits_graphql.domain.ledger import (
    Account,
    CreditService,
    EntryKind,
    LedgerEntry,
    PaymentMethod,
    key_reused,
    replay,
    request_fingerprint,
)
from credits_graphql.domain.money import canonical, format_plain_decimal
from credits_graphql.domain.policy import usage_micros
from credits_graphql.domain.recharge import RechargeAttempt
from credits_graphql.service.accounts import lock_account, start_recharge_if_due
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult
from credits_graphql.service.request_scope import audit_event_recorded, unaudited
from credits_graphql.service.transient import TransientConflict, retry_on_conflict
from credits_graphql.service.unit_of_work import AuditEvent, AuditOutcome, UnitOfWork

MAX_KEY_LENGTH = 255
MAX_REFERENCE_LENGTH = 255
MAX_MINUTES = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AddFunds:
    account_id: int
    amount: Decimal
    idempotency_key: str
    api_key_id: int | None = None
    """Who asks: a worker that credits the charge in the request's stead records the audit event in its name."""


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
    replayed: bool = False
    """What an earlier call recorded (the same key, or the same charge settled first by another): this one moved no
    money."""


async def add_funds(deps: Deps, org_id: int, cmd: AddFunds) -> Recorded:
    """Charges the account's payment method and credits the amount, once per idempotency key.

    The charge is written PENDING and committed before the gateway is called (outside any transaction),
    with its gateway key fixed in that row: a retry, a concurrent duplicate and the worker recovering a
    request that died (funds_recovery) all charge with that key, so the card is charged at most once and
    a charge that went through is credited once. A gateway error leaves the charge PENDING for the worker."""
    _check_key(cmd.idempotency_key)
    fingerprint = request_fingerprint(op="addFunds", amount=canonical(cmd.amount))
    opened = await _open_funds_charge(deps, org_id, cmd, fingerprint)
    if isinstance(opened, Recorded):
        return opened
    result = await deps.gateway.charge(opened.payment_token, opened.amount, opened.gateway_key)
    settled, recorded = await settle_funds_charge(deps, opened, result)
    if recorded is None:
        raise RuleViolation(ErrorCode.PAYMENT_DECLINED, f"The payment was declined: {settled.failure_reason}.",
                            ["input", "accountId"])
    return recorded


@retry_on_conflict
async def _open_funds_charge(deps: Deps, org_id: int, cmd: AddFunds, fingerprint: str) -> Recorded | FundsCharge:
    """The first result of a used key, the charge already in flight for the key, or a new PENDING charge."""
    async with unaudited(deps.uow)(write=True) as uow:  # no money moves here: the audit event waits for the credit
        account = await lock_account(uow, org_id, cmd.account_id)
        # The key's charges first: a usage report may have taken the key while the charge was in flight, and its
        # credit then carries none (settle_funds_charge); a retry still gets that credit, or joins that charge.
        if (credited := await uow.funds_charges.by_key(account.id, cmd.idempotency_key,
                                                       FundsChargeStatus.SUCCEEDED)) is not None:
            if credited.request_hash != fingerprint:
                raise key_reused()
            return await _credit_of(uow, credited, account)
        in_flight = await uow.funds_charges.by_key(account.id, cmd.idempotency_key, FundsChargeStatus.PENDING)
        joins = in_flight is not None and in_flight.request_hash == fingerprint
        if not joins and (done := await _replayed(uow, account, cmd.idempotency_key, fingerprint)):
            return done
        # A closed account is charged nothing new: a charge in flight when it was closed is the worker's to look
        # up, and to credit if it went through (funds_recovery).
        account.ensure_open()
        if in_flight is not None:
            if not joins:
                raise key_reused()
            return in_flight  # a concurrent duplicate, or a retry after a crash: charged with the same key
        micros = deps.policy.charge_micros(cmd.amount, account.currency, ErrorCode.INVALID_AMOUNT,
                                           ["input", "amount"])
        account.ensure_room_for(micros, ["input", "amount"],
                                in_flight_micros=await uow.funds_charges.pending_micros(account.id))
        if (card := account.payment_method) is None:
            raise RuleViolation(ErrorCode.PAYMENT_METHOD_REQUIRED, "Add a payment method before adding funds.",
                                ["input", "accountId"])
        charge = await uow.funds_charges.add(FundsCharge(
            account_id=account.id, idempotency_key=cmd.idempotency_key, request_hash=fingerprint,
            amount_micros=micros, currency=account.currency, payment_token=card.token,
            gateway_key=_funds_gateway_key(account.id, card, cmd.idempotency_key, fingerprint,
                                           await uow.funds_charges.count_by_key(account.id, cmd.idempotency_key)),
            created_at=deps.clock(), api_key_id=cmd.api_key_id))
        await uow.commit()
    return charge


@retry_on_conflict
async def settle_funds_charge(deps: Deps, charge: FundsCharge, result: ChargeResult, *,
                              for_the_request: bool = False) -> tuple[FundsCharge, Recorded | None]:
    """Credits a successful charge or records its decline; the Recorded credit is None for a decline.

    When another request or a worker settled the charge first, answers what that one recorded; unless a worker
    cancelled it, finding no charge by its key (the account closed), and this charge then went through: credited.
    A worker settles `for_the_request` that died or gave up: its credit commits with the request's audit event, in
    the name of the key that asked."""
    assert charge.id is not None
    # A request's audit event commits with its credit; with a decline, the request records it (a userError).
    async with (deps.uow if result.succeeded else unaudited(deps.uow))(write=True) as uow:
        account = await uow.accounts.get_any(charge.account_id, for_update=True)
        now = deps.clock()  # with the account locked: its entries are stamped in the order they commit
        current = await uow.funds_charges.get(charge.id, for_update=True)
        assert account is not None
        assert current is not None
        if current.status is FundsChargeStatus.SUCCEEDED:
            if charge.api_key_id is not None and current.api_key_id is None:
                # a worker credited it in this request's stead and recorded the request's event then: one event
                audit_event_recorded(deps.uow)
            return current, await _credit_of(uow, current, account)
        if not current.can_settle(result.succeeded):
            return current, None
        if not result.succeeded:
            current.decline(result.failure_reason or "no reason given", now)
            await uow.funds_charges.save(current)
            await uow.commit()
            return current, None
        # The card was charged: the credit is written even if the account was closed meanwhile. It carries
        # the caller's key, unless a usage report took that key meanwhile (keys are per account).
        key: str | None = current.idempotency_key
        if await uow.ledger.by_idempotency_key(account.id, current.idempotency_key) is not None:
            key = None
        entry = await uow.ledger.append(account.credit(
            EntryKind.FUNDS_ADDED, current.amount_micros, now, idempotency_key=key,
            request_hash=current.request_hash))
        assert entry.id is not None
        current.succeed(entry.id, now)
        if for_the_request and current.api_key_id is not None:
            await uow.audit_events.record(_credited_in_stead(current, account, now))
            current.api_key_id = None  # recorded: a request still waiting on the charge records no other event
        await uow.funds_charges.save(current)
        await uow.accounts.save(account)
        await uow.commit()
    return current, Recorded(entry, account)


def _credited_in_stead(charge: FundsCharge, account: Account, at: datetime) -> AuditEvent:
    """The OK event of an addFunds request whose credit a worker wrote: the request's input as the API records it
    (the amount as a decimal of the currency's minor digits)."""
    assert charge.api_key_id is not None
    return AuditEvent(org_id=account.org_id, api_key_id=charge.api_key_id, operation="addFunds",
                      account_id=account.id, input_summary={"amount": format_plain_decimal(charge.amount.amount),
                                                            "idempotencyKey": charge.idempotency_key},
                      outcome=AuditOutcome.OK, error_codes=(), occurred_at=at)


@retry_on_conflict
async def record_usage(deps: Deps, org_id: int, cmd: RecordUsage) -> Recorded:
    """Debits usage; refuses to go below zero. Starts a recharge in the same transaction when due."""
    fingerprint, occurred_at = check_usage(cmd, deps.clock())
    async with deps.uow(write=True) as uow:
        account = await lock_account(uow, org_id, cmd.account_id)
        now = deps.clock()  # with the account locked: its entries are stamped in the order they commit
        # The key is checked by the insert itself (no lookup before it, a round trip less): a retry is told apart
        # only when the report cannot be recorded as new, and is then answered as it was the first time, whatever
        # the account has become since (closed, drained).
        try:
            debit = account.debit_usage(
                usage_micros(cmd.amount, account.currency), cmd.service, occurred_at=occurred_at, at=now,
                minutes=cmd.minutes, reference=cmd.reference, idempotency_key=cmd.idempotency_key,
                request_hash=fingerprint)
        except RuleViolation:
            if done := await _replayed(uow, account, cmd.idempotency_key, fingerprint):
                return done
            raise
        entry = await uow.ledger.append_unless_key_used(debit)
        if entry is None:
            stored = await lock_account(uow, org_id, cmd.account_id)  # as stored: without the debit just made
            if done := await _replayed(uow, stored, cmd.idempotency_key, fingerprint):
                return done
            raise TransientConflict("an idempotency key was in use and then not")  # the account lock rules it out
        await uow.accounts.save(account)
        triggered = None
        if await start_recharge_if_due(uow, account, now, triggered_by_entry_id=entry.id):
            triggered = await uow.attempts.pending(account.id)
        await uow.commit()
    if triggered is not None:
        deps.recharge_created()
    return Recorded(entry, account, triggered)


def check_usage(cmd: RecordUsage, now: datetime) -> tuple[str, datetime]:
    """The checks that need no account; the request's fingerprint and when the usage occurred, in UTC."""
    _check_key(cmd.idempotency_key)
    if cmd.reference is not None and (len(cmd.reference) > MAX_REFERENCE_LENGTH or "\x00" in cmd.reference):
        raise RuleViolation(ErrorCode.INVALID_INPUT,
                            f"reference may have at most {MAX_REFERENCE_LENGTH} characters.",
                            ["input", "reference"])
    if cmd.minutes is not None and cmd.minutes < 0:
        raise RuleViolation(ErrorCode.INVALID_INPUT, "minutes may not be negative.", ["input", "minutes"])
    if cmd.minutes is not None and cmd.minutes > MAX_MINUTES:
        raise RuleViolation(ErrorCode.INVALID_INPUT, f"minutes may be at most {MAX_MINUTES}.", ["input", "minutes"])
    occurred_at = (cmd.occurred_at or now).astimezone(UTC)  # stored and answered in UTC, whatever was sent
    fingerprint = _usage_fingerprint(cmd.service, str(canonical(cmd.amount)), cmd.minutes, cmd.reference,
                                     cmd.occurred_at.isoformat() if cmd.occurred_at else None)
    return fingerprint, occurred_at


@functools.lru_cache(maxsize=4096)  # reports repeat the same few amounts: a batch's items hash a handful of inputs
def _usage_fingerprint(service: CreditService, amount: str, minutes: int | None, reference: str | None,
                       occurred_at: str | None) -> str:
    return request_fingerprint(op="recordUsage", service=service, amount=amount, minutes=minutes,
                               reference=reference, occurred_at=occurred_at)


def _funds_gateway_key(account_id: int, card: PaymentMethod, key: str, fingerprint: str, declined: int) -> str:
    """The idempotency key of a new funds charge at the gateway; the charge's row keeps it, for every retry and the
    worker. A key may be tried again after a decline (`declined` charges of it so far, none in flight or credited):
    that is another charge, which the gateway is asked to make, not to answer with the decline; the same for another
    card or amount, so a gateway that refuses a key reused with other parameters never sees one. A digest, so
    that it fits a gateway's limit (255 characters at Stripe) whatever the client's key."""
    digest = request_fingerprint(card=card.fingerprint, key=key, request=fingerprint, declined=declined)
    return f"funds:{account_id}:{digest[:40]}"


async def _credit_of(uow: UnitOfWork, charge: FundsCharge, account: Account) -> Recorded:
    """What a SUCCEEDED charge recorded: its credit."""
    assert charge.transaction_id is not None
    [credit] = await uow.ledger.get_many(account.org_id, [charge.transaction_id])
    return Recorded(credit, account, replayed=True)


async def _replayed(uow: UnitOfWork, account: Account, key: str, fingerprint: str) -> Recorded | None:
    first = await uow.ledger.by_idempotency_key(account.id, key)
    if first is None:
        return None
    assert first.id is not None
    return Recorded(replay(first, fingerprint), account, await uow.attempts.triggered_by(first.id), replayed=True)


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise RuleViolation(ErrorCode.INVALID_INPUT,
                            f"idempotencyKey must have 1 to {MAX_KEY_LENGTH} characters.",
                            ["input", "idempotencyKey"])
