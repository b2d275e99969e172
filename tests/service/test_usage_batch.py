"""Usage reported in batches: every item under recordUsage's rules, on its own, in the order given."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.ledger import CreditService, EntryKind
from credits_graphql.domain.recharge import AttemptStatus
from credits_graphql.service import accounts
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import Recorded, RecordUsage
from credits_graphql.service.usage_batch import MAX_BATCH_ITEMS, ItemResult, record_usage_batch, record_usages
from tests.conftest import Org, make_org
from tests.service.support import (
    attempts,
    count_pending_rows,
    enable_recharge,
    entries,
    fund,
    micros,
    open_account,
    reload,
    use,
)


def item(account_id: int, amount: str, key: str, **extra: object) -> RecordUsage:
    return RecordUsage(account_id, CreditService.DOMESTIC_CALLING, Decimal(amount), key, **extra)  # type: ignore[arg-type]


def recorded(result: ItemResult) -> Recorded:
    assert isinstance(result, Recorded), result
    return result


def refused(result: ItemResult) -> tuple[ErrorCode, tuple[str, ...] | None]:
    assert isinstance(result, RuleViolation), result
    return result.code, result.field


async def _funded(deps: Deps, org: Org, amount: str = "100") -> int:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, amount)
    return account.id


async def test_good_items_are_recorded_and_each_bad_one_gets_its_own_error(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    results = await record_usage_batch(deps, org.id, [
        item(account_id, "1", "a"),
        item(account_id, "0", "b"),
        item(account_id, "2", "c", minutes=-1),
        item(account_id, "1.0000001", "d"),
        item(account_id, "3", ""),
        item(account_id, "4", "e", reference="r" * 256),
        item(account_id, "2", "f"),
    ])
    assert [recorded(results[i]).entry.amount_micros for i in (0, 6)] == [-micros("1"), -micros("2")]
    assert refused(results[1]) == (ErrorCode.INVALID_AMOUNT, ("input", "amount"))
    assert refused(results[2]) == (ErrorCode.INVALID_INPUT, ("input", "minutes"))
    assert refused(results[3]) == (ErrorCode.INVALID_AMOUNT, ("input", "amount"))
    assert refused(results[4]) == (ErrorCode.INVALID_INPUT, ("input", "idempotencyKey"))
    assert refused(results[5]) == (ErrorCode.INVALID_INPUT, ("input", "reference"))
    assert (await reload(deps, account_id)).balance_micros == micros("7")
    assert len(await entries(deps, account_id, [EntryKind.USAGE])) == 2


async def test_items_apply_in_the_order_given(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "100")
    amounts = ["5", "0.5", "10", "0.000001", "20"]
    results = await record_usage_batch(deps, org.id, [item(account_id, a, f"k{n}") for n, a in enumerate(amounts)])
    balances = [recorded(r).entry.balance_after_micros for r in results]
    assert balances == [micros("95"), micros("94.5"), micros("84.5"), micros("84.499999"), micros("64.499999")]
    stored = list(reversed(await entries(deps, account_id, [EntryKind.USAGE])))
    assert [e.id for e in stored] == [recorded(r).entry.id for r in results]
    assert [e.balance_after_micros for e in stored] == balances


async def test_each_item_is_stored_as_answered_when_accounts_interleave(deps: Deps, org: Org) -> None:
    """Entries of several accounts written together: each stored entry is the one its item was answered with."""
    first, second = await _funded(deps, org, "100"), await _funded(deps, org, "100")
    occurred = datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    items = [item(account_id, f"0.{n + 1}", f"k{n}", minutes=n, reference=f"call-{n}" if n % 2 else None,
                  occurred_at=occurred + timedelta(minutes=n) if n % 3 else None)
             for n, account_id in enumerate([first, second, second, first, second, first, first])]
    answered = [recorded(result).entry for result in await record_usage_batch(deps, org.id, items)]
    for account_id in (first, second):
        stored = list(reversed(await entries(deps, account_id, [EntryKind.USAGE])))
        assert stored == [entry for entry in answered if entry.account_id == account_id]
    assert [entry.reference for entry in answered] == [None, "call-1", None, "call-3", None, "call-5", None]
    assert [entry.id for entry in answered] == sorted(entry.id for entry in answered if entry.id is not None)


async def test_running_out_of_funds_mid_batch_refuses_only_what_does_not_fit(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    results = await record_usage_batch(deps, org.id, [
        item(account_id, "4", "a"), item(account_id, "4", "b"), item(account_id, "4", "c"),
        item(account_id, "5", "d"), item(account_id, "2", "e"), item(account_id, "0.01", "f")])
    assert [recorded(results[i]).entry.balance_after_micros for i in (0, 1, 4)] == [micros("6"), micros("2"), 0]
    assert refused(results[2]) == (ErrorCode.INSUFFICIENT_FUNDS, ("input", "amount"))
    assert refused(results[3])[0] is ErrorCode.INSUFFICIENT_FUNDS
    assert refused(results[5])[0] is ErrorCode.INSUFFICIENT_FUNDS
    assert (await reload(deps, account_id)).balance_micros == 0
    # a refused item did not use up its key
    await fund(deps, org.id, account_id, "10", key="more")
    assert recorded((await record_usage_batch(deps, org.id, [item(account_id, "4", "c")]))[0]).entry.amount_micros \
        == -micros("4")


async def test_a_replayed_batch_returns_the_same_transactions_and_moves_no_money(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    batch = [item(account_id, "1", "a"), item(account_id, "20", "b"), item(account_id, "2", "c")]
    first = await record_usage_batch(deps, org.id, batch)
    again = await record_usage_batch(deps, org.id, batch)
    assert [recorded(again[i]).entry for i in (0, 2)] == [recorded(first[i]).entry for i in (0, 2)]
    assert refused(again[1])[0] is ErrorCode.INSUFFICIENT_FUNDS
    assert (await reload(deps, account_id)).balance_micros == micros("7")
    assert len(await entries(deps, account_id, [EntryKind.USAGE])) == 2


async def test_a_key_recorded_by_record_usage_replays_in_a_batch_or_is_reused(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    single = await use(deps, org.id, account_id, "1", "k")
    results = await record_usage_batch(deps, org.id, [item(account_id, "1", "k"), item(account_id, "2", "k")])
    assert recorded(results[0]).entry == single.entry
    assert refused(results[1]) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, ("input", "idempotencyKey"))
    assert (await reload(deps, account_id)).balance_micros == micros("9")


async def test_a_key_repeated_within_a_batch_replays_the_first_item_or_is_reused(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "10")
    results = await record_usage_batch(deps, org.id, [
        item(account_id, "1", "k"), item(account_id, "1", "k"), item(account_id, "1.5", "k"),
        item(account_id, "100", "x"), item(account_id, "2", "x")])
    assert recorded(results[1]).entry == recorded(results[0]).entry
    assert refused(results[2]) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, ("input", "idempotencyKey"))
    # the refused first use of "x" did not use up the key
    assert refused(results[3])[0] is ErrorCode.INSUFFICIENT_FUNDS
    assert recorded(results[4]).entry.amount_micros == -micros("2")
    assert (await reload(deps, account_id)).balance_micros == micros("7")


async def test_items_of_several_accounts_and_of_another_org_are_kept_apart(deps: Deps, org: Org) -> None:
    first, second = await _funded(deps, org, "10"), await _funded(deps, org, "20")
    other = await make_org(deps, "Globex")
    foreign = await _funded(deps, other, "30")
    closed = await _funded(deps, org, "10")
    await accounts.close_account(deps, org.id, closed)
    results = await record_usage_batch(deps, org.id, [
        item(second, "1", "a"), item(foreign, "1", "a"), item(first, "2", "a"), item(closed, "1", "a"),
        item(987654, "1", "a"), item(second, "3", "b")])
    assert recorded(results[0]).entry.balance_after_micros == micros("19")
    assert refused(results[1]) == (ErrorCode.ACCOUNT_NOT_FOUND, ("input", "accountId"))
    assert recorded(results[2]).entry.balance_after_micros == micros("8")
    assert refused(results[3]) == (ErrorCode.ACCOUNT_CLOSED, ("input", "accountId"))
    assert refused(results[4])[0] is ErrorCode.ACCOUNT_NOT_FOUND
    assert recorded(results[5]).entry.balance_after_micros == micros("16")
    assert [(await reload(deps, a)).balance_micros for a in (first, second, foreign, closed)] == [
        micros("8"), micros("16"), micros("30"), micros("10")]


@pytest.mark.parametrize("amount", ["0", "1.0000001", "1", "1000"])
async def test_a_report_on_a_closed_account_is_refused_alike_alone_and_in_a_batch(
        deps: Deps, org: Org, amount: str) -> None:
    closed = await _funded(deps, org, "10")
    await accounts.close_account(deps, org.id, closed)
    with pytest.raises(RuleViolation) as alone:
        await use(deps, org.id, closed, amount, "k")
    [in_batch] = await record_usage_batch(deps, org.id, [item(closed, amount, "k")])
    assert refused(in_batch) == (alone.value.code, alone.value.field)


async def test_a_key_used_on_several_accounts_replays_each_accounts_own_entry(deps: Deps, org: Org) -> None:
    first, second, third = [await _funded(deps, org, "10") for _ in range(3)]
    earlier = await use(deps, org.id, second, "4", "b")  # "b" is used on the second account only
    batch = [item(first, "1", "a"), item(second, "2", "a"), item(first, "3", "b"), item(third, "4", "b")]
    results = await record_usage_batch(deps, org.id, batch)
    assert [recorded(r).entry.balance_after_micros for r in results] == [
        micros("9"), micros("4"), micros("6"), micros("6")]
    again = await record_usage_batch(deps, org.id, [*batch, item(second, "4", "b"), item(second, "5", "b")])
    assert [recorded(r).entry for r in again[:4]] == [recorded(r).entry for r in results]
    assert [recorded(r).replayed for r in results] == [False, False, False, False]
    assert [recorded(r).replayed for r in again[:4]] == [True, True, True, True]
    assert recorded(again[4]).entry == earlier.entry
    assert refused(again[5]) == (ErrorCode.IDEMPOTENCY_KEY_REUSED, ("input", "idempotencyKey"))
    assert [(await reload(deps, a)).balance_micros for a in (first, second, third)] == [
        micros("6"), micros("4"), micros("6")]


async def test_crossing_the_trigger_starts_exactly_one_recharge(deps: Deps, org: Org) -> None:
    account_id = await _funded(deps, org, "50")
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="20")
    results = await record_usage_batch(deps, org.id, [item(account_id, "10", f"k{n}") for n in range(4)])
    crossing = recorded(results[3])  # 50 -> 40 -> 30 -> 20 -> 10: the fourth goes below 20
    assert [recorded(r).triggered_recharge for r in results[:3]] == [None, None, None]
    assert crossing.triggered_recharge is not None
    assert crossing.triggered_recharge.triggered_by_entry_id == crossing.entry.id
    assert crossing.triggered_recharge.amount_micros == micros("100")
    assert await count_pending_rows(deps, account_id) == 1
    more = await record_usage_batch(deps, org.id, [item(account_id, "1", "m1"), item(account_id, "1", "m2")])
    assert [recorded(r).triggered_recharge for r in more] == [None, None]
    assert [a.status for a in await attempts(deps, account_id)] == [AttemptStatus.PENDING]
    replayed = await record_usage_batch(deps, org.id, [item(account_id, "10", "k3")])
    assert recorded(replayed[0]).triggered_recharge == crossing.triggered_recharge


@pytest.mark.parametrize("size", [0, MAX_BATCH_ITEMS + 1])
async def test_an_empty_or_oversized_batch_is_refused_whole(deps: Deps, org: Org, size: int) -> None:
    account_id = await _funded(deps, org, "10")
    with pytest.raises(RuleViolation):
        await record_usage_batch(deps, org.id, [item(account_id, "0.000001", f"k{n}") for n in range(size)])
    assert await entries(deps, account_id, [EntryKind.USAGE]) == []


async def test_concurrent_batches_on_the_same_accounts_keep_every_balance_exact(deps: Deps, org: Org) -> None:
    ids = [await _funded(deps, org, "100") for _ in range(3)]

    async def batch(n: int) -> list[ItemResult]:
        # each batch names the accounts in its own order; locks are still taken in id order
        order = ids if n % 2 else list(reversed(ids))
        return await record_usage_batch(deps, org.id, [item(a, "1", f"b{n}-{i}-{a}") for i in range(10) for a in order])

    outcomes = await asyncio.gather(*(batch(n) for n in range(6)))
    assert all(isinstance(r, Recorded) for results in outcomes for r in results)
    for account_id in ids:  # the autouse fixture checks balance == sum of entries on every account
        assert (await reload(deps, account_id)).balance_micros == micros("40")


async def test_reports_of_several_organizations_each_move_only_their_own_organizations_accounts(
        deps: Deps, org: Org) -> None:
    """As reports of several organizations that arrived together go (service/usage_combiner.py, on SQLite)."""
    other = await make_org(deps, "Other")
    ours, theirs = await _funded(deps, org, "10"), await _funded(deps, other, "10")

    results = await record_usages(deps, [
        (org.id, item(ours, "1", "k")),
        (other.id, item(theirs, "2", "k")),  # the same key on another account: a report of its own
        (other.id, item(ours, "3", "stolen")),  # an account of the other organization
        (org.id, item(theirs, "4", "stolen")),
        (org.id, item(ours, "5", "k2")),
    ])

    assert [type(r).__name__ for r in results[:2]] == ["Recorded", "Recorded"]
    assert refused(results[2]) == refused(results[3]) == (ErrorCode.ACCOUNT_NOT_FOUND, ("input", "accountId"))
    assert recorded(results[4]).account.balance_micros == micros("4")
    assert (await reload(deps, theirs)).balance_micros == micros("8")
    assert [e.idempotency_key for e in await entries(deps, ours, [EntryKind.USAGE])] == ["k2", "k"]
