"""Serialization failures and deadlocks are the database's, not the caller's: the store reports them as
TransientConflict, and a use case runs again a bounded number of times before giving up."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from credits_graphql.service import ledger, queries
from credits_graphql.service.deps import Deps
from credits_graphql.service.transient import MAX_ATTEMPTS, TransientConflict
from credits_graphql.service.unit_of_work import UnitOfWork, UnitOfWorkFactory
from credits_graphql.store.unit_of_work import SqlUnitOfWork
from tests.conftest import Org
from tests.service.support import open_account

RAISE = "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{state}'; END $$"


class ConflictingCommits:
    """A unit-of-work factory whose next `conflicts` write transactions fail at commit with SQLSTATE `state`
    (raised by PostgreSQL itself; SQLite serialises writers and has no such state, so there it is simulated)."""

    def __init__(self, inner: UnitOfWorkFactory, conflicts: int, state: str = "40001") -> None:
        self.inner = inner
        self.remaining = conflicts
        self.state = state

    def __call__(self, *, write: bool = False) -> UnitOfWork:
        uow = self.inner(write=write)
        if write:
            assert isinstance(uow, SqlUnitOfWork)
            uow.commit = self._failing_commit(uow)  # type: ignore[method-assign]
        return uow

    def _failing_commit(self, uow: SqlUnitOfWork) -> Any:
        commit = uow.commit

        async def failing_commit() -> None:
            if self.remaining == 0:
                return await commit()
            self.remaining -= 1
            if uow.connection.dialect.name == "postgresql":
                await uow.connection.execute(text(RAISE.format(state=self.state)))
            raise TransientConflict("simulated")
        return failing_commit


async def _balance(deps: Deps, org: Org, account_id: int) -> tuple[int, int]:
    """The balance in micros and the number of ledger entries."""
    account = await queries.account(deps, org.id, account_id)
    assert account is not None
    return account.balance_micros, await queries.count_entries(deps, account_id, None)


@pytest.mark.parametrize("state", ["40001", "40P01"])
async def test_a_use_case_that_meets_conflicts_is_run_again_and_moves_money_once(
        deps: Deps, org: Org, state: str) -> None:
    account = await open_account(deps, org.id)
    flaky = replace(deps, uow=ConflictingCommits(deps.uow, conflicts=MAX_ATTEMPTS - 1, state=state))

    recorded = await ledger.add_funds(flaky, org.id, ledger.AddFunds(account.id, Decimal(50), "fund-1"))

    assert recorded.account.balance_micros == 50_000_000
    assert await _balance(deps, org, account.id) == (50_000_000, 1)


async def test_a_use_case_gives_up_after_the_bounded_retries_and_writes_nothing(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    flaky = replace(deps, uow=ConflictingCommits(deps.uow, conflicts=MAX_ATTEMPTS))

    with pytest.raises(TransientConflict):
        await ledger.add_funds(flaky, org.id, ledger.AddFunds(account.id, Decimal(50), "fund-1"))

    assert await _balance(deps, org, account.id) == (0, 0)
    # Nothing used up the key: the same call goes through once the conflicts are over.
    await ledger.add_funds(deps, org.id, ledger.AddFunds(account.id, Decimal(50), "fund-1"))
    assert await _balance(deps, org, account.id) == (50_000_000, 1)


@pytest.mark.parametrize("state", ["40001", "40P01"])
async def test_the_store_reports_a_postgresql_serialization_failure_or_deadlock_as_a_transient_conflict(
        deps: Deps, database_url: str, state: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLSTATE 40001/40P01 come from PostgreSQL; SQLite serialises writers")
    with pytest.raises(TransientConflict, match=state):
        await _transaction_failing_with(deps, state)


async def _transaction_failing_with(deps: Deps, state: str) -> None:
    async with deps.uow(write=True) as uow:
        assert isinstance(uow, SqlUnitOfWork)
        await uow.connection.execute(text(RAISE.format(state=state)))
