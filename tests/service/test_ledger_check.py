"""check-ledger's use case: every balance against the sum of its entries, every entry count against the entries;
the counts corrected on request, a balance only reported."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import Any, Self

import asyncpg
import pytest

from credits_graphql.domain.ledger import CreditService, EntryKind
from credits_graphql.domain.money import MAX_BALANCE_MICROS, Money
from credits_graphql.service import ledger_check, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger_check import BalanceOff
from credits_graphql.service.unit_of_work import KindTally
from tests.conftest import Org, make_org
from tests.crash.conftest import asyncpg_dsn, wait_for
from tests.service.support import (
    credit_in_one_entry,
    enable_recharge,
    fund,
    micros,
    open_account,
    overwrite_account,
    reload,
    use,
)


async def _busy_accounts(deps: Deps, org: Org) -> list[int]:
    """Accounts with every kind of entry, one without any, in two organizations."""
    other = await make_org(deps, "Other")
    ids = []
    for owner in (org, other):
        account = await open_account(deps, owner.id)
        await fund(deps, owner.id, account.id, "50")
        await enable_recharge(deps, owner.id, account.id, amount="100", trigger="20")
        await use(deps, owner.id, account.id, "35", key="call-1")  # below the trigger: a recharge
        assert await recharges.run_due(deps) == 1
        await use(deps, owner.id, account.id, "0.25", key="call-2")
        ids.append(account.id)
    ids.append((await open_account(deps, org.id, name="Empty")).id)
    return ids


@pytest.mark.parametrize("batch", [1, 2, ledger_check.BATCH])
async def test_a_sound_ledger_is_reported_sound_whatever_the_batch(deps: Deps, org: Org, batch: int) -> None:
    ids = await _busy_accounts(deps, org)
    found = await ledger_check.check_ledger(deps, batch=batch)
    assert (found.accounts, found.balances_off, found.counts_off, found.is_sound) == (len(ids), [], [], True)


async def test_counts_off_are_reported_and_corrected_on_request_and_a_balance_off_only_reported(
        deps: Deps, org: Org) -> None:
    miscounted, unbalanced, sound = await _busy_accounts(deps, org)
    await overwrite_account(deps, miscounted, usage_entries=0, auto_recharge_entries=7)
    await overwrite_account(deps, unbalanced, balance_micros=micros("114.750001"))

    found = await ledger_check.check_ledger(deps)
    assert found.counts_off == [miscounted]
    assert found.balances_off == [BalanceOff(unbalanced, Money(micros("114.750001"), "SEK"),
                                             Money(micros("114.75"), "SEK"), Money(micros("114.75"), "SEK"))]
    assert not found.is_sound
    assert (await reload(deps, miscounted)).entry_counts[EntryKind.USAGE] == 0  # only looked at

    corrected = await ledger_check.check_ledger(deps, correct_counts=True)
    assert (corrected.counts_off, corrected.balances_off) == (found.counts_off, found.balances_off)
    assert (await reload(deps, miscounted)).entry_counts == {
        EntryKind.FUNDS_ADDED: 1, EntryKind.AUTO_RECHARGE: 1, EntryKind.USAGE: 2}
    assert (await reload(deps, unbalanced)).balance_micros == micros("114.750001")  # for a person to look into
    assert (await reload(deps, sound)).entry_counts == dict.fromkeys(EntryKind, 0)

    again = await ledger_check.check_ledger(deps)
    assert (again.counts_off, len(again.balances_off)) == ([], 1)
    await overwrite_account(deps, unbalanced, balance_micros=micros("114.75"))  # the person's fix
    assert (await ledger_check.check_ledger(deps)).is_sound


class _Delegating:
    def __init__(self, inner: Any, hook: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TallyHook(_Delegating):
    """The check's transaction, with `hook` run once just after the entries were counted."""

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    @property
    def ledger(self) -> Any:
        return _HookedLedger(self._inner.ledger, self._hook)


class _HookedLedger(_Delegating):
    async def tally(self, account_ids: Collection[int]) -> list[KindTally]:
        tallies: list[KindTally] = await self._inner.tally(account_ids)
        await self._hook()
        return tallies


async def test_a_usage_report_sent_while_counts_are_corrected_waits_and_loses_no_count(
        deps: Deps, org: Org, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite writes one transaction at a time: the report cannot start inside the check")
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "1000")
    await overwrite_account(deps, account.id, funds_added_entries=0)
    reports: list[asyncio.Task[object]] = []

    async def report_meanwhile() -> None:  # the entries are counted, the counts not yet written
        reports.append(asyncio.create_task(use(deps, org.id, account.id, "1", key="call-1")))
        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            async def waits_or_done() -> bool:
                return reports[0].done() or bool(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"))

            await wait_for(waits_or_done, "the usage report waiting for the account, or recorded", 10)
        finally:
            await admin.close()

    factory = deps.uow
    hooked = replace(deps, uow=lambda *, write=False: _TallyHook(factory(write=write), report_meanwhile))
    assert (await ledger_check.check_ledger(hooked, correct_counts=True)).counts_off == [account.id]
    await reports[0]
    assert (await reload(deps, account.id)).entry_counts == {
        EntryKind.FUNDS_ADDED: 1, EntryKind.AUTO_RECHARGE: 0, EntryKind.USAGE: 1}
    assert (await ledger_check.check_ledger(deps)).is_sound


async def _use_up_in_one_entry(deps: Deps, account_id: int) -> None:
    """Draws the whole balance as one USAGE entry, written through the repositories (a report is at most a
    billion units): a history too long to build through the service."""
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.get_any(account_id, for_update=True)
        assert account is not None
        now = deps.clock()
        await uow.ledger.append(account.debit_usage(
            account.balance_micros, CreditService.DOMESTIC_CALLING, occurred_at=now, at=now, minutes=None,
            reference=None, idempotency_key=f"use-up-{account.count_entries()}", request_hash="-"))
        await uow.accounts.save(account)
        await uow.commit()


async def test_an_account_whose_credits_over_its_life_pass_the_64_bit_range_is_checked_exactly(
        deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, currency="VND")
    for _ in range(10):  # 10**19 micros in and out: past 2**63 for each kind, while the balance stays in range
        await credit_in_one_entry(deps, account.id, MAX_BALANCE_MICROS)
        await _use_up_in_one_entry(deps, account.id)
    await credit_in_one_entry(deps, account.id, micros("7"))
    report = await ledger_check.check_ledger(deps)
    assert (report.accounts, report.balances_off, report.counts_off) == (1, [], [])

    await overwrite_account(deps, account.id, balance_micros=micros("8"))
    off = (await ledger_check.check_ledger(deps)).balances_off
    assert [entry.entries_sum for entry in off] == [Money(micros("7"), "VND")]
    await overwrite_account(deps, account.id, balance_micros=micros("7"))
