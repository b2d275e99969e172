"""Registers the domain's enums with Strawberry under the contract's names, each value described.

Fields are annotated with the domain classes themselves; importing this module names them."""

from __future__ import annotations

import dataclasses
from enum import Enum

import strawberry

from credits_graphql.domain import errors, ledger, recharge
from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.ledger import AccountStatus, CreditService, EntryKind
from credits_graphql.domain.recharge import AttemptStatus, RechargeStatus


def described(enum: type[Enum], descriptions: dict[Enum, str]) -> None:
    """Describes each value (the domain's enums stay free of Strawberry, so their values cannot say it)."""
    definition = enum.__strawberry_definition__  # type: ignore[attr-defined]
    assert set(descriptions) == set(enum), f"describe every value of {enum.__name__}"
    definition.values = [dataclasses.replace(value, description=descriptions[enum(value.value)])
                         for value in definition.values]


strawberry.enum(ledger.CreditService, description="The services that consume communication credits.")
described(CreditService, {
    CreditService.AUDIO_CONFERENCING_DIAL_OUT: "An audio conference dialling out to a participant.",
    CreditService.DOMESTIC_CALLING: "Calling minutes within the country.",
    CreditService.INTERNATIONAL_CALLING: "Calling minutes abroad.",
    CreditService.TOLL_FREE: "A toll-free number, which cannot work without credits.",
})
strawberry.enum(ledger.EntryKind, name="TransactionKind")
described(EntryKind, {
    EntryKind.FUNDS_ADDED: "An admin added funds by hand (charged to the payment method).",
    EntryKind.AUTO_RECHARGE: "Auto-recharge added funds (charged to the payment method).",
    EntryKind.USAGE: "A service consumed credits.",
})
strawberry.enum(ledger.AccountStatus)
described(AccountStatus, {
    AccountStatus.ACTIVE: "Money moves: funds, recharges and usage.",
    AccountStatus.CLOSED: "No money moves any more (ACCOUNT_CLOSED); it is still read, and a used idempotency key "
                          "still answers its first result.",
})
strawberry.enum(recharge.RechargeStatus)
described(RechargeStatus, {
    RechargeStatus.DISABLED: "Auto-recharge is off.",
    RechargeStatus.ACTIVE: "Auto-recharge is on and will trigger when the balance falls below the trigger.",
    RechargeStatus.SUSPENDED: "Auto-recharge stopped itself after repeated payment failures; saving settings or a "
                              "new payment method re-activates it.",
})
strawberry.enum(recharge.AttemptStatus, name="RechargeAttemptStatus")
described(AttemptStatus, {
    AttemptStatus.PENDING: "Not settled yet: due at notBefore, or being charged by a worker.",
    AttemptStatus.SUCCEEDED: "Charged, and credited as an AUTO_RECHARGE transaction.",
    AttemptStatus.FAILED: "Not charged: declined, or cancelled before any charge (see `cancelled`).",
})
strawberry.enum(errors.ErrorCode, name="UserErrorCode")
described(ErrorCode, {
    ErrorCode.INVALID_INPUT: "A value breaks a rule of its own: an empty name or idempotency key, a string too "
                             "long, a currency this service does not hold.",
    ErrorCode.INVALID_AMOUNT: "An amount that is not positive, finer than the currency's minor unit where a card is "
                              "charged, or outside the purchase bounds.",
    ErrorCode.CURRENCY_MISMATCH: "Reserved: amounts carry no currency of their own in this API, so no mutation "
                                 "returns it.",
    ErrorCode.ACCOUNT_NOT_FOUND: "No such account in this organization.",
    ErrorCode.ACCOUNT_CLOSED: "The account is closed: no money moves.",
    ErrorCode.INSUFFICIENT_FUNDS: "The balance does not cover the usage; it was refused and nothing was recorded.",
    ErrorCode.INVALID_RECHARGE_SETTINGS: "The recharge amount or trigger breaks a rule: see the message and field.",
    ErrorCode.PAYMENT_METHOD_REQUIRED: "The account has no payment method to charge.",
    ErrorCode.PAYMENT_DECLINED: "The payment method was declined; nothing was credited, and the same idempotency "
                                "key may be tried again.",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "The idempotency key was used on this account with other input.",
})
