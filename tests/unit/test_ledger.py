"""The account aggregate: credits, usage debits, the never-below-zero rule and idempotent replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.ledger import (
    Account,
    AccountStatus,
    CreditService,
    EntryKind,
    LedgerEntry,
    replay,
    request_fingerprint,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def account(balance_micros: int = 0, status: AccountStatus = AccountStatus.ACTIVE, currency: str = "SEK") -> Account:
    return Account(id=1, org_id=1, name="Main", currency=currency, status=status, balance_micros=balance_micros,
                   created_at=NOW)


def debit(acc: Account, micros: int, key: str = "k1", request_hash: str = "h1") -> LedgerEntry:
    return acc.debit_usage(micros, CreditService.DOMESTIC_CALLING, occurred_at=NOW - timedelta(minutes=5), at=NOW,
                           minutes=3, reference="call-1", idempotency_key=key, request_hash=request_hash)


def test_a_credit_raises_the_balance_and_records_it() -> None:
    acc = account(5_000_000)
    entry = acc.credit(EntryKind.FUNDS_ADDED, 100_000_000, NOW, idempotency_key="k", request_hash="h")
    assert acc.balance_micros == 105_000_000
    assert str(acc.balance) == "105.00 SEK"
    assert entry.kind is EntryKind.FUNDS_ADDED
    assert entry.amount_micros == 100_000_000
    assert entry.balance_after_micros == 105_000_000
    assert str(entry.amount) == "100.00 SEK"
    assert str(entry.balance_after) == "105.00 SEK"
    assert (entry.idempotency_key, entry.request_hash) == ("k", "h")
    assert entry.occurred_at == entry.created_at == NOW
    assert entry.id is None


def test_an_auto_recharge_credit_is_recorded_as_such() -> None:
    acc = account()
    entry = acc.credit(EntryKind.AUTO_RECHARGE, 50_000_000, NOW)
    assert entry.kind is EntryKind.AUTO_RECHARGE
    assert entry.balance_after_micros == acc.balance_micros == 50_000_000


@pytest.mark.parametrize("micros", [0, -1])
def test_a_credit_must_be_positive(micros: int) -> None:
    acc = account(10)
    with pytest.raises(ValueError, match="positive"):
        acc.credit(EntryKind.FUNDS_ADDED, micros, NOW)
    assert acc.balance_micros == 10


def test_usage_lowers_the_balance_and_records_a_negative_entry() -> None:
    acc = account(10_000_000)
    entry = debit(acc, 2_500_000)
    assert acc.balance_micros == 7_500_000
    assert entry.kind is EntryKind.USAGE
    assert entry.amount_micros == -2_500_000
    assert str(entry.amount) == "-2.50 SEK"
    assert entry.balance_after_micros == 7_500_000
    assert entry.service is CreditService.DOMESTIC_CALLING
    assert (entry.minutes, entry.reference, entry.idempotency_key, entry.request_hash) == (3, "call-1", "k1", "h1")
    assert entry.occurred_at == NOW - timedelta(minutes=5)
    assert entry.created_at == NOW


def test_usage_of_exactly_the_balance_leaves_zero() -> None:
    acc = account(10_000_000)
    entry = debit(acc, 10_000_000)
    assert acc.balance_micros == 0
    assert entry.balance_after_micros == 0


def test_usage_beyond_the_balance_is_refused_and_changes_nothing() -> None:
    acc = account(10_000_000)
    with pytest.raises(RuleViolation) as caught:
        debit(acc, 10_000_001)
    assert caught.value.code is ErrorCode.INSUFFICIENT_FUNDS
    assert caught.value.field == ("input", "amount")
    assert "10.000001 SEK" in caught.value.message
    assert "10.00 SEK" in caught.value.message
    assert acc.balance_micros == 10_000_000


def test_usage_on_an_empty_balance_is_refused() -> None:
    acc = account(0)
    with pytest.raises(RuleViolation) as caught:
        debit(acc, 1)
    assert caught.value.code is ErrorCode.INSUFFICIENT_FUNDS
    assert acc.balance_micros == 0


def test_usage_on_a_closed_account_is_refused_even_with_funds() -> None:
    acc = account(10_000_000, status=AccountStatus.CLOSED)
    assert acc.is_closed
    with pytest.raises(RuleViolation) as caught:
        debit(acc, 1_000_000)
    assert caught.value.code is ErrorCode.ACCOUNT_CLOSED
    assert caught.value.field == ("input", "accountId")
    assert acc.balance_micros == 10_000_000


def test_a_closed_account_reports_closed_before_insufficient_funds() -> None:
    acc = account(0, status=AccountStatus.CLOSED)
    with pytest.raises(RuleViolation) as caught:
        debit(acc, 1_000_000)
    assert caught.value.code is ErrorCode.ACCOUNT_CLOSED


def test_ensure_open_passes_for_an_active_account() -> None:
    acc = account()
    assert not acc.is_closed
    acc.ensure_open()


@pytest.mark.parametrize("micros", [0, -5])
def test_a_usage_debit_must_be_positive(micros: int) -> None:
    acc = account(10)
    with pytest.raises(ValueError, match="positive"):
        debit(acc, micros)
    assert acc.balance_micros == 10


def test_new_accounts_have_auto_recharge_disabled_and_no_payment_method() -> None:
    acc = account()
    assert acc.recharge.status == "DISABLED"
    assert acc.payment_method is None


def test_the_request_fingerprint_is_stable_and_ignores_argument_order() -> None:
    first = request_fingerprint(amount=Decimal("2.5"), service="TOLL_FREE", minutes=3)
    again = request_fingerprint(minutes=3, service="TOLL_FREE", amount=Decimal("2.5"))
    assert first == again
    assert len(first) == 64
    assert first == request_fingerprint(amount=Decimal("2.5"), service="TOLL_FREE", minutes=3)


def test_the_request_fingerprint_treats_equal_normalized_amounts_as_the_same_request() -> None:
    assert request_fingerprint(amount=Decimal("100").normalize()) == \
        request_fingerprint(amount=Decimal("100.00").normalize())
    assert request_fingerprint(amount=Decimal("2.50").normalize()) == \
        request_fingerprint(amount=Decimal("2.5").normalize())


@pytest.mark.parametrize("changed", [{"amount": Decimal("2.6")}, {"service": "DOMESTIC_CALLING"}, {"minutes": None},
                                     {"reference": "x"}])
def test_the_request_fingerprint_differs_when_the_input_differs(changed: dict[str, object]) -> None:
    base: dict[str, object] = {"amount": Decimal("2.5"), "service": "TOLL_FREE", "minutes": 3}
    assert request_fingerprint(**base) != request_fingerprint(**{**base, **changed})


def test_a_replay_with_the_same_input_returns_the_first_entry() -> None:
    acc = account(10_000_000)
    h = request_fingerprint(amount=Decimal("1"))
    entry = debit(acc, 1_000_000, request_hash=h)
    assert replay(entry, h) is entry
    assert acc.balance_micros == 9_000_000


def test_a_replay_with_different_input_is_refused_as_a_reused_key() -> None:
    acc = account(10_000_000)
    entry = debit(acc, 1_000_000, request_hash=request_fingerprint(amount=Decimal("1")))
    with pytest.raises(RuleViolation) as caught:
        replay(entry, request_fingerprint(amount=Decimal("2")))
    assert caught.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert caught.value.field == ("input", "idempotencyKey")
