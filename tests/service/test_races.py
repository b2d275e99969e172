"""Interleavings forced step by step: a worker leasing an attempt while an admin closes the account or
disables auto-recharge, or while a usage debit brings the balance back below the trigger. A worker that charged
the card must get the credit written, and a balance below the trigger must keep a recharge pending.

On SQLite write transactions are serialized (BEGIN IMMEDIATE), so these interleavings cannot happen there;
on PostgreSQL a worker's claim does not wait for the account row lock that the admin's transaction holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import pytest

from credits_graphql.domain.ledger import EntryKind
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.conftest import Org
from tests.service.support import enable_recharge, entries, fund, micros, open_account, recording, reload, use


class _HookedRepository:
    """Runs `hook` once, inside a transaction of these deps: just before its first call of `method` (`before=True`)
    or just after."""

    def __init__(self, inner: Any, method: str, hook: Callable[[], Awaitable[None]], fired: list[bool],
                 before: bool) -> None:
        self._inner = inner
        self._method = method
        self._hook = hook
        self._fired = fired
        self._before = before

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._inner, name)
        if name != self._method:
            return call

        async def hooked(*args: Any, **kwargs: Any) -> Any:
            if self._before and not self._fired:
                self._fired.append(True)
                await self._hook()
            result = await call(*args, **kwargs)
            if not self._fired:
                self._fired.append(True)
                await self._hook()
            return result

        return hooked


class _HookedUow:
    def __init__(self, inner: UnitOfWork, repository: str, hooked: Callable[[Any], _HookedRepository]) -> None:
        self._inner = inner
        self._repository = repository
        self._hooked = hooked

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        setattr(self, self._repository, self._hooked(getattr(self._inner, self._repository)))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._inner.commit()


def _hooked(deps: Deps, hook: Callable[[], Awaitable[None]], *, before: bool = True,
            call: str = "attempts.pending") -> Deps:
    """These deps run `hook` once, in the first transaction that calls `call` (a repository's method)."""
    factory: UnitOfWorkFactory = deps.uow
    repository, method = call.split(".")
    fired: list[bool] = []

    def make(*, write: bool = False) -> UnitOfWork:
        return _HookedUow(factory(write=write), repository,  # type: ignore[return-value]
                          lambda inner: _HookedRepository(inner, method, hook, fired, before))

    return replace(deps, uow=make)


@pytest.fixture
def postgresql_only(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite serializes write transactions; this interleaving cannot happen there")


async def _admin_change(deps: Deps, org: Org, account_id: int, change: str) -> None:
    if change == "close":
        await accounts.close_account(deps, org.id, account_id)
    else:
        await accounts.update_recharge_settings(deps, org.id, accounts.UpdateRechargeSettings(
            account_id, enabled=False, recharge_amount=Decimal(100), trigger_balance=Decimal(20)))


@pytest.mark.usefixtures("postgresql_only")
@pytest.mark.parametrize("change", ["close", "disable"])
async def test_a_worker_that_leased_the_attempt_before_the_admin_looked_gets_its_charge_credited(
        deps: Deps, org: Org, gateway: SandboxGateway, change: str) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    worker_deps, spy = recording(deps, gateway)
    claims: list[recharges.Claim] = []

    async def worker_claims() -> None:
        claim = await recharges.claim_next(worker_deps)
        assert claim is not None
        claims.append(claim)

    await _admin_change(_hooked(deps, worker_claims), org, account.id, change)
    [claim] = claims
    await recharges.settle(worker_deps, claim, await recharges.charge(worker_deps, claim))

    charged = [key for key in spy.keys if key.startswith("recharge:")]
    credited = await entries(deps, account.id, [EntryKind.AUTO_RECHARGE])
    assert len(charged) == len(credited) == 1


@pytest.mark.usefixtures("postgresql_only")
@pytest.mark.parametrize("change", ["close", "disable"])
async def test_a_worker_arriving_after_the_admin_locked_the_attempt_charges_nothing_and_it_is_cancelled(
        deps: Deps, org: Org, gateway: SandboxGateway, change: str) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    worker_deps, spy = recording(deps, gateway)
    claims: list[recharges.Claim | None] = []

    async def worker_claims() -> None:
        claims.append(await recharges.claim_next(worker_deps))

    await _admin_change(_hooked(deps, worker_claims, before=False), org, account.id, change)

    assert claims == [None], "the attempt is locked by the admin's transaction: the worker skips it"
    assert [key for key in spy.keys if key.startswith("recharge:")] == []
    assert await entries(deps, account.id, [EntryKind.AUTO_RECHARGE]) == []
    async with deps.uow() as uow:
        assert await uow.attempts.pending(account.id) is None


@pytest.mark.usefixtures("postgresql_only")
async def test_a_debit_made_while_a_worker_finds_the_attempt_no_longer_due_keeps_the_recharge_coming(
        deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100", "fund-1")
    await enable_recharge(deps, org.id, account.id, amount="200", trigger="50")
    await use(deps, org.id, account.id, "60", "call-1")  # 40 < 50: a recharge is pending
    await fund(deps, org.id, account.id, "100", "fund-2")  # 140: that recharge is no longer needed, for now

    async def calls_use_up_the_funds() -> None:
        recorded = await use(deps, org.id, account.id, "139.50", "call-2")
        assert recorded.triggered_recharge is None  # the pending one will do

    # The worker has read the account at 140 when the debit commits 0.50.
    claim = await recharges.claim_next(_hooked(deps, calls_use_up_the_funds, before=False, call="accounts.get_any"))

    assert claim is not None, "the recharge the debit counted on was cancelled"
    await recharges.settle(deps, claim, await recharges.charge(deps, claim))
    assert (await reload(deps, account.id)).balance_micros == micros("200.50")
