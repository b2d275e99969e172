"""Usage reported by the telephony platform: debits that never take the balance below zero."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.ledger import CreditService, EntryKind
from credits_graphql.service import accounts, ledger
from credits_graphql.service.deps import Deps
from tests.conftest import Org, make_org
from tests.service.support import attempts, enable_recharge, entries, fund, micros, open_account, reload, use, violation


async def _funded(deps: Deps, org: Org, amount: str = "100") -> int:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, amount)
    return account.id


async def test_usage_debits_the_balance_with_sub_cent_precision(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    recorded = await ledger.record_usage(deps, org.id, ledger.RecordUsage(
        account_id, CreditService.TOLL_FREE, Decimal("0.0125"), "u1", minutes=3, reference="call-42",
        occurred_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC)))
    assert recorded.entry.kind is EntryKind.USAGE
    assert recorded.entry.amount_micros == -12_500
    assert recorded.entry.balance_after_micros == micros("99.9875")
    assert (recorded.entry.service, recorded.entry.minutes, recorded.entry.reference) == (
        CreditService.TOLL_FREE, 3, "call-42")
    assert recorded.triggered_recharge is None
    assert (await reload(deps, account_id)).balance_micros == micros("99.9875")
    stored = (await entries(deps, account_id))[0]
    assert stored.id == recorded.entry.id
    assert stored.occurred_at.replace(tzinfo=UTC) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def test_usage_may_take_the_balance_to_exactly_zero(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    recorded = await use(deps, org.id, account_id, "10", "all")
    assert recorded.entry.balance_after_micros == 0
    assert (await reload(deps, account_id)).balance_micros == 0


async def test_usage_beyond_the_balance_is_refused_and_records_nothing(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    with violation(ErrorCode.INSUFFICIENT_FUNDS, ["input", "amount"]):
        await use(deps, org.id, account_id, "10.000001", "too-much")
    assert (await reload(deps, account_id)).balance_micros == micros("10")
    assert await entries(deps, account_id, [EntryKind.USAGE]) == []


async def test_a_refused_usage_does_not_use_up_its_key(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    with violation(ErrorCode.INSUFFICIENT_FUNDS):
        await use(deps, org.id, account_id, "20", "k")
    await fund(deps, org.id, account_id, "10", key="more")
    recorded = await use(deps, org.id, account_id, "20", "k")
    assert recorded.entry.amount_micros == -micros("20")
    assert (await reload(deps, account_id)).balance_micros == 0


async def test_usage_on_a_closed_account_is_refused(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await accounts.close_account(deps, org.id, account_id)
    with violation(ErrorCode.ACCOUNT_CLOSED, ["input", "accountId"]):
        await use(deps, org.id, account_id, "1", "u1")
    assert (await reload(deps, account_id)).balance_micros == micros("100")


async def test_usage_on_another_organizations_account_is_not_found(deps: Deps, org: Org) -> None:
    other = await make_org(deps, "Other")
    theirs = await open_account(deps, other.id)
    await fund(deps, other.id, theirs.id, "100")
    with violation(ErrorCode.ACCOUNT_NOT_FOUND, ["input", "accountId"]):
        await use(deps, org.id, theirs.id, "1", "u1")
    assert (await reload(deps, theirs.id)).balance_micros == micros("100")


async def test_a_replayed_usage_returns_the_first_entry_and_debits_once(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    first = await use(deps, org.id, account_id, "1.5", "u1")
    again = await use(deps, org.id, account_id, "1.500", "u1")
    assert again.entry == first.entry
    assert again.account.balance_micros == micros("98.5")  # the account as it is, not debited a second time
    assert (await reload(deps, account_id)).balance_micros == micros("98.5")
    assert len(await entries(deps, account_id, [EntryKind.USAGE])) == 1


async def test_a_replayed_usage_returns_the_recharge_it_triggered(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    first = await use(deps, org.id, account_id, "40", "u1")
    assert first.triggered_recharge is not None
    again = await use(deps, org.id, account_id, "40", "u1")
    assert again.entry.id == first.entry.id
    assert again.triggered_recharge is not None
    assert again.triggered_recharge.id == first.triggered_recharge.id
    assert len(await attempts(deps, account_id)) == 1


@pytest.mark.parametrize(("amount", "service"), [("2", CreditService.DOMESTIC_CALLING),
                                                 ("1", CreditService.TOLL_FREE)])
async def test_reusing_a_usage_key_with_different_input_is_refused(deps: Deps, org: Org, amount: str,
                                                                   service: CreditService) -> None:
    account_id = await _funded(deps, org)
    await use(deps, org.id, account_id, "1", "u1", service=CreditService.DOMESTIC_CALLING)
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):
        await use(deps, org.id, account_id, amount, "u1", service=service)
    assert (await reload(deps, account_id)).balance_micros == micros("99")


async def test_a_usage_key_cannot_be_reused_for_adding_funds(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await use(deps, org.id, account_id, "10", "shared")
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED):
        await fund(deps, org.id, account_id, "10", key="shared")
    assert (await reload(deps, account_id)).balance_micros == micros("90")


@pytest.mark.parametrize("amount", ["0", "-1", "-0.000001", "0.0000001", "1.1234567", "1000000001"])
async def test_a_usage_amount_not_positive_or_finer_than_a_micro_unit_is_invalid(deps: Deps, org: Org,
                                                                                 amount: str) -> None:
    account_id = await _funded(deps, org)
    with violation(ErrorCode.INVALID_AMOUNT, ["input", "amount"]):
        await use(deps, org.id, account_id, amount, "u1")
    assert (await reload(deps, account_id)).balance_micros == micros("100")


async def test_the_same_key_on_two_accounts_records_on_both(deps: Deps, org: Org) -> None:
    first = await _funded(deps, org)
    second = await _funded(deps, org)
    one = await use(deps, org.id, first, "1", "same-key")
    two = await use(deps, org.id, second, "2", "same-key")
    assert one.entry.id != two.entry.id
    assert (await reload(deps, first)).balance_micros == micros("99")
    assert (await reload(deps, second)).balance_micros == micros("98")


@pytest.mark.parametrize(("minutes", "reference", "field"), [
    (-1, None, "minutes"), (None, "r" * 256, "reference")])
async def test_negative_minutes_or_an_overlong_reference_are_invalid_input(
        deps: Deps, org: Org, minutes: int | None, reference: str | None, field: str) -> None:
    account_id = await _funded(deps, org)
    with violation(ErrorCode.INVALID_INPUT, ["input", field]):
        await ledger.record_usage(deps, org.id, ledger.RecordUsage(
            account_id, CreditService.TOLL_FREE, Decimal(1), "u1", minutes=minutes, reference=reference))
    assert await entries(deps, account_id, [EntryKind.USAGE]) == []


@pytest.mark.parametrize(("minutes", "message"), [
    (-1, "minutes may not be negative."), (2**31, "minutes may be at most 2147483647.")])
async def test_minutes_out_of_range_are_refused_with_what_is_wrong(deps: Deps, org: Org, minutes: int,
                                                                  message: str) -> None:
    # Through the API, minutes above 2**31 - 1 are not a GraphQL Int: BAD_USER_INPUT (tests/api/test_malformed_input).
    account_id = await _funded(deps, org)
    with violation(ErrorCode.INVALID_INPUT, ["input", "minutes"]) as refused:
        await ledger.record_usage(deps, org.id, ledger.RecordUsage(
            account_id, CreditService.TOLL_FREE, Decimal(1), "u1", minutes=minutes))
    assert refused.value.message == message
    assert await entries(deps, account_id, [EntryKind.USAGE]) == []


async def test_a_usage_replayed_after_the_balance_ran_low_returns_the_first_entry(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    first = await use(deps, org.id, account_id, "8", "u1")
    await use(deps, org.id, account_id, "2", "u2")
    again = await use(deps, org.id, account_id, "8", "u1")
    assert again.entry.id == first.entry.id
    assert (await reload(deps, account_id)).balance_micros == 0
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):  # not INSUFFICIENT_FUNDS
        await use(deps, org.id, account_id, "9", "u1")


async def test_a_key_that_added_funds_cannot_be_reused_for_usage(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    await fund(deps, org.id, account_id, "10", key="shared")
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):
        await use(deps, org.id, account_id, "10", "shared")
    assert (await reload(deps, account_id)).balance_micros == micros("110")
    assert await entries(deps, account_id, [EntryKind.USAGE]) == []


async def test_a_usage_replayed_after_the_account_closed_returns_the_first_entry(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org)
    first = await use(deps, org.id, account_id, "1", "u1")
    await accounts.close_account(deps, org.id, account_id)
    again = await use(deps, org.id, account_id, "1", "u1")
    assert again.entry.id == first.entry.id
    assert (await reload(deps, account_id)).balance_micros == micros("99")


def test_a_reports_fingerprint_is_the_one_earlier_releases_stored() -> None:
    """Stored entries keep the request_hash they were written with: a retry of one of them must still replay,
    so the fingerprint of the same input may never change (whatever caches or shortcuts compute it)."""
    now = datetime(2026, 11, 30, tzinfo=UTC)
    full = ledger.RecordUsage(1, CreditService.DOMESTIC_CALLING, Decimal("2.50"), "k", minutes=3, reference="call-1",
                              occurred_at=datetime(2026, 11, 25, 14, 3, tzinfo=UTC))
    bare = ledger.RecordUsage(2, CreditService.INTERNATIONAL_CALLING, Decimal("10"), "other key")
    for cmd, stored in ((full, "2866bdf9bd6269f395c538a40095f1f2b507f0ecdfc3872260ff1ffdc202ef41"),
                        (bare, "d0a0dcc7430f1ae015cc3e18f10f62cfc653e243379c80254e766b33e3e53d6a")):
        assert ledger.check_usage(cmd, now)[0] == stored
    assert ledger.check_usage(dataclasses.replace(full, amount=Decimal("2.5")), now)[0] == \
        ledger.check_usage(full, now)[0]
    assert ledger.check_usage(dataclasses.replace(full, amount=Decimal("2.51")), now)[0] != \
        ledger.check_usage(full, now)[0]
