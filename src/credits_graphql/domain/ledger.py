"""The account aggregate and its append-only ledger: credits, debits and the balance rule."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from credits_graphql.domain.errors import ErrorCode, RuleViolation, account_closed
from credits_graphql.domain.money import MAX_BALANCE_MICROS, Money
from credits_graphql.domain.recharge import RechargeSettings


class AccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"


class EntryKind(StrEnum):
    FUNDS_ADDED = "FUNDS_ADDED"
    AUTO_RECHARGE = "AUTO_RECHARGE"
    USAGE = "USAGE"


class CreditService(StrEnum):
    AUDIO_CONFERENCING_DIAL_OUT = "AUDIO_CONFERENCING_DIAL_OUT"
    DOMESTIC_CALLING = "DOMESTIC_CALLING"
    INTERNATIONAL_CALLING = "INTERNATIONAL_CALLING"
    TOLL_FREE = "TOLL_FREE"


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    token: str
    brand: str
    last4: str
    updated_at: datetime

    @property
    def fingerprint(self) -> str:
        """Tells this card apart from the one it replaced, and from the same card saved again."""
        return request_fingerprint(token=self.token, updated_at=self.updated_at.isoformat())[:16]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """An immutable ledger line. `amount_micros` is signed; `id` is None until stored."""

    account_id: int
    kind: EntryKind
    amount_micros: int
    balance_after_micros: int
    currency: str
    occurred_at: datetime
    created_at: datetime
    service: CreditService | None = None
    minutes: int | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    id: int | None = None

    @property
    def amount(self) -> Money:
        return Money(self.amount_micros, self.currency)

    @property
    def balance_after(self) -> Money:
        return Money(self.balance_after_micros, self.currency)


@dataclass(slots=True)
class Account:
    id: int
    org_id: int
    name: str
    currency: str
    status: AccountStatus
    balance_micros: int
    created_at: datetime
    recharge: RechargeSettings = field(default_factory=RechargeSettings)
    payment_method: PaymentMethod | None = None
    entry_counts: dict[EntryKind, int] = field(default_factory=lambda: dict.fromkeys(EntryKind, 0))
    """How many ledger entries of each kind the account has: kept with the balance, so that counting a
    long history costs nothing."""

    @property
    def balance(self) -> Money:
        return Money(self.balance_micros, self.currency)

    @property
    def is_closed(self) -> bool:
        return self.status is AccountStatus.CLOSED

    def ensure_open(self) -> None:
        if self.is_closed:
            raise account_closed()

    @property
    def recharge_terms(self) -> str:
        """The card and the saved settings that a recharge is charged under, as a fingerprint: a decline counts
        against these only, as a new card or saved settings start their own count of failures."""
        card = self.payment_method.fingerprint if self.payment_method is not None else None
        saved_at = self.recharge.updated_at.isoformat() if self.recharge.updated_at is not None else None
        return request_fingerprint(card=card, settings_saved_at=saved_at)[:32]

    def ensure_room_for(self, micros: int, field: list[str], *, in_flight_micros: int = 0) -> None:
        """Funds are refused, before any charge, when they would take the balance above the most it may hold once
        the charges in flight (`in_flight_micros`, credited whenever they go through) are credited too."""
        if self.balance_micros + in_flight_micros + micros > MAX_BALANCE_MICROS:
            counting = (f", counting {Money(in_flight_micros, self.currency)} of charges still being processed"
                        if in_flight_micros else "")
            raise RuleViolation(ErrorCode.INVALID_AMOUNT, f"An account may hold at most "
                                f"{Money(MAX_BALANCE_MICROS, self.currency)}: this would take the balance above it"
                                f"{counting}.", field)

    def count_entries(self, kinds: Collection[EntryKind] | None = None) -> int:
        return sum(count for kind, count in self.entry_counts.items() if not kinds or kind in kinds)

    def credit(self, kind: EntryKind, micros: int, at: datetime, *, idempotency_key: str | None = None,
               request_hash: str | None = None) -> LedgerEntry:
        """Adds funds. Credits are never refused here: by the time one is written the money was charged."""
        if micros <= 0:
            raise ValueError(f"a credit must be positive, got {micros} micros")
        self.balance_micros += micros
        self.entry_counts[kind] += 1
        return LedgerEntry(
            account_id=self.id, kind=kind, amount_micros=micros, balance_after_micros=self.balance_micros,
            currency=self.currency, occurred_at=at, created_at=at, idempotency_key=idempotency_key,
            request_hash=request_hash,
        )

    def debit_usage(self, micros: int, service: CreditService, *, occurred_at: datetime, at: datetime,
                    minutes: int | None, reference: str | None, idempotency_key: str,
                    request_hash: str) -> LedgerEntry:
        """Draws usage from the balance; never below zero (the platform refuses the call instead)."""
        if micros <= 0:
            raise ValueError(f"a debit must be positive, got {micros} micros")
        self.ensure_open()
        if micros > self.balance_micros:
            raise RuleViolation(
                ErrorCode.INSUFFICIENT_FUNDS,
                f"Usage of {Money(micros, self.currency)} exceeds the available balance of {self.balance}.",
                ["input", "amount"],
            )
        self.balance_micros -= micros
        self.entry_counts[EntryKind.USAGE] += 1
        return LedgerEntry(
            account_id=self.id, kind=EntryKind.USAGE, amount_micros=-micros,
            balance_after_micros=self.balance_micros, currency=self.currency, occurred_at=occurred_at,
            created_at=at, service=service, minutes=minutes, reference=reference,
            idempotency_key=idempotency_key, request_hash=request_hash,
        )


def request_fingerprint(**fields: object) -> str:
    """A stable hash of a request's meaning, to tell a retry from a reuse of its idempotency key."""
    canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(entry: LedgerEntry, request_hash: str) -> LedgerEntry:
    """The first result of an idempotency key, or IDEMPOTENCY_KEY_REUSED when the input differs."""
    if entry.request_hash != request_hash:
        raise key_reused()
    return entry


def key_reused() -> RuleViolation:
    return RuleViolation(ErrorCode.IDEMPOTENCY_KEY_REUSED, "This idempotency key was already used with different "
                         "input.", ["input", "idempotencyKey"])
