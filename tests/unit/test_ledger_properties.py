"""Properties over any sequence of operations: the balance is the sum of the entries and never negative,
refused usage changes nothing, and one recharge always lifts the balance to the trigger or above."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.ledger import Account, AccountStatus, CreditService, EntryKind, LedgerEntry
from credits_graphql.domain.money import (
    CURRENCY_MINOR_UNITS,
    MAX_AMOUNT_MICROS,
    MICROS_PER_UNIT,
    Money,
    format_plain_decimal,
    parse_plain_decimal,
    to_micros,
)
from credits_graphql.domain.policy import Policy
from credits_graphql.domain.recharge import RechargeSettings, RechargeStatus, configure

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BOUNDED = settings(max_examples=150, deadline=None)

micros = st.integers(min_value=1, max_value=200 * MICROS_PER_UNIT)
operations = st.lists(st.tuples(st.sampled_from(["credit", "usage"]), micros), max_size=40)
currencies = st.sampled_from(sorted(CURRENCY_MINOR_UNITS))


@st.composite
def recharge_settings(draw: st.DrawFn, currency: str = "SEK") -> RechargeSettings:
    """ACTIVE settings made through configure(): whole minor units, trigger strictly below the amount."""
    step = 10 ** (6 - CURRENCY_MINOR_UNITS[currency])
    amount_units = draw(st.integers(min_value=10 * MICROS_PER_UNIT // step, max_value=1000 * MICROS_PER_UNIT // step))
    trigger_units = draw(st.integers(min_value=0, max_value=amount_units - 1))
    return configure(
        RechargeSettings(), enabled=True, recharge_amount=Decimal(amount_units * step).scaleb(-6),
        trigger_balance=Decimal(trigger_units * step).scaleb(-6), currency=currency, policy=Policy(),
        has_payment_method=True, at=NOW,
    )


def new_account(balance_micros: int = 0, recharge: RechargeSettings | None = None) -> Account:
    return Account(id=1, org_id=1, name="Main", currency="SEK", status=AccountStatus.ACTIVE,
                   balance_micros=balance_micros, created_at=NOW, recharge=recharge or RechargeSettings())


def debit(account: Account, amount: int, key: str) -> LedgerEntry:
    return account.debit_usage(amount, CreditService.TOLL_FREE, occurred_at=NOW, at=NOW, minutes=None,
                               reference=None, idempotency_key=key, request_hash=key)


def assert_ledger_consistent(account: Account, entries: list[LedgerEntry]) -> None:
    running = 0
    for entry in entries:
        running += entry.amount_micros
        assert entry.balance_after_micros == running
        assert entry.balance_after_micros >= 0
    assert account.balance_micros == running == sum(e.amount_micros for e in entries)
    assert account.balance_micros >= 0


@BOUNDED
@given(ops=operations, recharge=st.one_of(st.none(), recharge_settings()))
def test_the_balance_is_always_the_sum_of_the_entries_and_never_negative(
        ops: list[tuple[str, int]], recharge: RechargeSettings | None) -> None:
    account = new_account(recharge=recharge)
    entries: list[LedgerEntry] = []
    for index, (kind, amount) in enumerate(ops):
        before = account.balance_micros
        if kind == "credit":
            entry = account.credit(EntryKind.FUNDS_ADDED, amount, NOW)
            assert entry.amount_micros == amount
            entries.append(entry)
        else:
            if amount > before:
                with pytest.raises(RuleViolation) as refused:
                    debit(account, amount, f"k{index}")
                assert refused.value.code is ErrorCode.INSUFFICIENT_FUNDS
                assert account.balance_micros == before
                assert_ledger_consistent(account, entries)
                continue
            entry = debit(account, amount, f"k{index}")
            assert account.balance_micros == before - amount
            assert entry.amount_micros == -amount
            entries.append(entry)
            if account.recharge.is_due(account.balance_micros):
                assert account.recharge.amount_micros is not None
                entries.append(account.credit(EntryKind.AUTO_RECHARGE, account.recharge.amount_micros, NOW))
        assert_ledger_consistent(account, entries)
        if entries:
            assert entries[-1].balance_after_micros == account.balance_micros


@BOUNDED
@given(recharge=recharge_settings(), start=st.integers(min_value=0, max_value=2000 * MICROS_PER_UNIT),
       data=st.data())
def test_after_a_debit_a_recharge_is_due_exactly_below_the_trigger_and_one_recharge_lifts_it_back(
        recharge: RechargeSettings, start: int, data: st.DataObject) -> None:
    assert recharge.status is RechargeStatus.ACTIVE
    assert recharge.amount_micros is not None
    assert recharge.trigger_micros is not None
    assert 0 <= recharge.trigger_micros < recharge.amount_micros
    account = new_account(start, recharge)
    if start > 0:
        debit(account, data.draw(st.integers(min_value=1, max_value=start)), "usage")
    balance = account.balance_micros
    assert account.recharge.is_due(balance) is (balance < recharge.trigger_micros)
    entry = account.credit(EntryKind.AUTO_RECHARGE, recharge.amount_micros, NOW)
    assert entry.balance_after_micros == balance + recharge.amount_micros
    assert account.balance_micros >= recharge.trigger_micros
    assert not account.recharge.is_due(account.balance_micros)


@BOUNDED
@given(recharge=recharge_settings(), balance=st.integers(min_value=0, max_value=2000 * MICROS_PER_UNIT))
def test_one_recharge_lifts_any_non_negative_balance_to_the_trigger_or_above(
        recharge: RechargeSettings, balance: int) -> None:
    assert recharge.amount_micros is not None
    assert recharge.trigger_micros is not None
    assert balance + recharge.amount_micros >= recharge.trigger_micros
    assert not recharge.is_due(balance + recharge.amount_micros)


@BOUNDED
@given(currency=st.sampled_from(["SEK", "JPY", "USD", "EUR"]), data=st.data())
def test_settings_made_in_any_currency_fit_its_minor_unit(currency: str, data: st.DataObject) -> None:
    recharge = data.draw(recharge_settings(currency))
    step = 10 ** (6 - CURRENCY_MINOR_UNITS[currency])
    assert recharge.amount_micros is not None
    assert recharge.trigger_micros is not None
    assert recharge.amount_micros % step == 0
    assert recharge.trigger_micros % step == 0


@BOUNDED
@given(amount=st.integers(min_value=-MAX_AMOUNT_MICROS, max_value=MAX_AMOUNT_MICROS), currency=currencies)
def test_money_amount_round_trips_through_the_plain_decimal_text(amount: int, currency: str) -> None:
    text = format_plain_decimal(Money(amount, currency).amount)
    assert "e" not in text.lower()
    assert to_micros(parse_plain_decimal(text)) == amount
    digits = len(text.partition(".")[2])
    assert CURRENCY_MINOR_UNITS[currency] <= digits <= 6
