"""An account's entries are stamped in the order they commit: a change that waited for the account while another
committed is stamped after it, so that an account's statement never shows a later entry created earlier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from decimal import Decimal

from credits_graphql.domain.ledger import CreditService, LedgerEntry
from credits_graphql.service import ledger, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import AddFunds, RecordUsage
from credits_graphql.service.unit_of_work import UnitOfWork
from credits_graphql.service.usage_batch import record_usage_batch
from tests.conftest import Clock, Org
from tests.service.support import enable_recharge, entries, fund, open_account, pending, use


def _report(account_id: int, key: str) -> RecordUsage:
    return RecordUsage(account_id, CreditService.DOMESTIC_CALLING, Decimal("1"), key)


async def _funded(deps: Deps, org: Org) -> int:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    return account.id


async def _stamped_in_commit_order(deps: Deps, account_id: int) -> list[LedgerEntry]:
    """The account's entries in the order they committed (ids), whose stamps must be in that order too."""
    stored = sorted(await entries(deps, account_id), key=lambda entry: entry.id or 0)
    stamps = [entry.created_at for entry in stored]
    assert stamps == sorted(stamps), stamps
    return stored


class _AnotherCommitsFirst:
    """Deps' unit of work, whose `nth` write transaction starts only after a usage report on the account has
    committed, a second later: as when a change waits for the account's lock while another holds it."""

    def __init__(self, deps: Deps, clock: Clock, org: Org, account_id: int, nth: int) -> None:
        self.deps, self.clock, self.org, self.account_id = deps, clock, org, account_id
        self.writes_to_go = nth

    def __call__(self, *, write: bool = False) -> AbstractAsyncContextManager[UnitOfWork]:
        return self._after_the_other(write)

    @asynccontextmanager
    async def _after_the_other(self, write: bool) -> AsyncIterator[UnitOfWork]:
        if write:
            self.writes_to_go -= 1
            if self.writes_to_go == 0:
                self.clock.advance(seconds=1)
                await use(self.deps, self.org.id, self.account_id, "1", "committed-meanwhile")
        async with self.deps.uow(write=write) as uow:
            yield uow


def _waiting_behind_another(deps: Deps, clock: Clock, org: Org, account_id: int, nth: int = 1) -> Deps:
    return replace(deps, uow=_AnotherCommitsFirst(deps, clock, org, account_id, nth))


async def test_a_report_that_waited_for_the_account_is_stamped_after_the_one_that_committed_meanwhile(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org)
    await ledger.record_usage(_waiting_behind_another(deps, clock, org, account_id), org.id,
                              _report(account_id, "waited"))
    assert (await _stamped_in_commit_order(deps, account_id))[-1].idempotency_key == "waited"


async def test_a_batch_that_waited_its_turn_is_stamped_after_the_report_that_committed_meanwhile(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org)

    @asynccontextmanager
    async def another_goes_first() -> AsyncIterator[None]:
        clock.advance(seconds=1)
        await use(deps, org.id, account_id, "1", "committed-meanwhile")
        yield

    await record_usage_batch(deps, org.id, [_report(account_id, "b1"), _report(account_id, "b2")],
                             turn=another_goes_first)
    stored = await _stamped_in_commit_order(deps, account_id)
    assert [entry.idempotency_key for entry in stored[-2:]] == ["b1", "b2"]


async def test_funds_credited_after_a_report_committed_meanwhile_are_stamped_after_it(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org)
    # addFunds opens its charge in one transaction and credits it in a second: the report commits between them.
    await ledger.add_funds(_waiting_behind_another(deps, clock, org, account_id, nth=2), org.id,
                           AddFunds(account_id, Decimal("50"), "funds-2"))
    assert (await _stamped_in_commit_order(deps, account_id))[-1].idempotency_key == "funds-2"


async def test_a_recharge_credited_after_a_report_committed_meanwhile_is_stamped_after_it(
        deps: Deps, org: Org, clock: Clock) -> None:
    account_id = await _funded(deps, org)
    await enable_recharge(deps, org.id, account_id, amount="100", trigger="95")
    await use(deps, org.id, account_id, "10", "drains-below-the-trigger")
    assert await pending(deps, account_id) is not None
    claim = await recharges.claim_next(deps)
    assert claim is not None
    outcome = await recharges.charge(deps, claim)
    await recharges.settle(_waiting_behind_another(deps, clock, org, account_id), claim, outcome)
    assert (await _stamped_in_commit_order(deps, account_id))[-1].amount_micros == 100_000_000
