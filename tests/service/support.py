"""Helpers for the use-case tests: opening accounts, expecting rule violations, checking the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from credits_graphql.domain.errors import ErrorCode, RuleViolation
from credits_graphql.domain.funds import FundsCharge
from credits_graphql.domain.ledger import Account, CreditService, EntryKind, LedgerEntry
from credits_graphql.domain.money import Money
from credits_graphql.domain.recharge import AttemptStatus, RechargeAttempt
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts, funds_recovery, ledger, recharges
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import CardDetails, ChargeResult
from credits_graphql.store.tables import accounts as accounts_table
from credits_graphql.store.tables import funds_charges, recharge_attempts
from tests.conftest import Clock

GRACE_PASSED = funds_recovery.GRACE.total_seconds() + 1
"""Seconds after which the worker takes a PENDING funds charge as left by a dead request."""


@contextmanager
def violation(code: ErrorCode, field: Sequence[str] | None = None) -> Iterator[pytest.ExceptionInfo[RuleViolation]]:
    """Expects a RuleViolation with this code (and, when given, this field path)."""
    with pytest.raises(RuleViolation) as info:
        yield info
    assert info.value.code is code, info.value
    if field is not None:
        assert info.value.field == tuple(field), info.value


async def open_account(deps: Deps, org_id: int, *, currency: str = "SEK", token: str | None = "tok_visa",
                       name: str = "Main") -> Account:
    return await accounts.create_account(deps, org_id, accounts.CreateAccount(name, currency, token))


async def fund(deps: Deps, org_id: int, account_id: int, amount: str, key: str = "fund-1") -> ledger.Recorded:
    return await ledger.add_funds(deps, org_id, ledger.AddFunds(account_id, Decimal(amount), key))


async def use(deps: Deps, org_id: int, account_id: int, amount: str, key: str,
              service: CreditService = CreditService.DOMESTIC_CALLING) -> ledger.Recorded:
    return await ledger.record_usage(deps, org_id, ledger.RecordUsage(account_id, service, Decimal(amount), key))


async def enable_recharge(deps: Deps, org_id: int, account_id: int, amount: str = "100",
                          trigger: str = "20") -> Account:
    return await accounts.update_recharge_settings(deps, org_id, accounts.UpdateRechargeSettings(
        account_id, enabled=True, recharge_amount=Decimal(amount), trigger_balance=Decimal(trigger)))


def micros(amount: str) -> int:
    return int(Decimal(amount) * 1_000_000)


async def reload(deps: Deps, account_id: int) -> Account:
    async with deps.uow() as uow:
        account = await uow.accounts.get_any(account_id)
    assert account is not None
    return account


async def entries(deps: Deps, account_id: int, kinds: Sequence[EntryKind] | None = None) -> list[LedgerEntry]:
    """Every entry of the account, newest first."""
    async with deps.uow() as uow:
        return list(await uow.ledger.page(account_id, kinds, None, 10_000))


async def attempts(deps: Deps, account_id: int) -> list[RechargeAttempt]:
    """Every recharge attempt of the account, newest first."""
    async with deps.uow() as uow:
        return list(await uow.attempts.page(account_id, None, 10_000))


async def pending(deps: Deps, account_id: int) -> RechargeAttempt | None:
    async with deps.uow() as uow:
        return await uow.attempts.pending(account_id)


async def count_pending_rows(deps: Deps, account_id: int) -> int:
    """Counts PENDING rows straight in the table (not through `pending()`, which reads one row)."""
    async with deps.uow() as uow:
        query = select(func.count()).select_from(recharge_attempts).where(
            recharge_attempts.c.account_id == account_id, recharge_attempts.c.status == AttemptStatus.PENDING)
        return int((await uow.connection.execute(query)).scalar_one())  # type: ignore[attr-defined]


async def all_account_ids(deps: Deps) -> list[int]:
    async with deps.uow() as uow:
        rows = await uow.connection.execute(select(accounts_table.c.id))  # type: ignore[attr-defined]
        return [row.id for row in rows]


async def assert_every_ledger_consistent(deps: Deps) -> None:
    for account_id in await all_account_ids(deps):
        await assert_ledger_consistent(deps, account_id)


async def assert_ledger_consistent(deps: Deps, account_id: int) -> Account:
    """The ledger rule: balance == sum of entries == newest balanceAfter, each entry chains on the one before,
    the balance never negative, at most one PENDING recharge attempt, and entry counters that match."""
    async with deps.uow() as uow:
        account = await uow.accounts.get_any(account_id)
        total = await uow.ledger.total(account_id)
        newest_first = list(await uow.ledger.page(account_id, None, None, 10_000))
    assert account is not None
    assert total == account.balance_micros, (account_id, total, account.balance_micros)
    assert account.balance_micros >= 0
    if newest_first:
        assert newest_first[0].balance_after_micros == account.balance_micros
    else:
        assert account.balance_micros == 0
    running = 0
    for entry in reversed(newest_first):
        running += entry.amount_micros
        assert entry.balance_after_micros == running, entry
        assert entry.balance_after_micros >= 0, entry
        assert (entry.amount_micros < 0) == (entry.kind is EntryKind.USAGE), entry
    assert await count_pending_rows(deps, account_id) <= 1
    for kind in EntryKind:  # the per-kind counters behind totalCount
        assert account.entry_counts[kind] == sum(e.kind is kind for e in newest_first), (kind, account.entry_counts)
    async with deps.uow() as uow:
        assert await uow.ledger.count(account_id, None) == len(newest_first)
    return account


async def charge_of(deps: Deps, account_id: int, key: str) -> FundsCharge:
    """The newest charge written for the key, in whatever state it is."""
    async with deps.uow() as uow:
        charge_id = (await uow.connection.execute(  # type: ignore[attr-defined]
            select(funds_charges.c.id).where(funds_charges.c.account_id == account_id,
                                             funds_charges.c.idempotency_key == key)
            .order_by(funds_charges.c.id.desc()).limit(1))).scalar_one()
        charge = await uow.funds_charges.get(charge_id)
    assert charge is not None
    return charge


class RecordingGateway:
    """Wraps the sandbox and notes every charge call with its idempotency key (repeated calls included), and every
    lookup's key."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Money, str]] = []
        self.lookups: list[str] = []

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        self.calls.append((token, amount, idempotency_key))
        return await self.inner.charge(token, amount, idempotency_key)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        self.lookups.append(idempotency_key)
        return await self.inner.find_charge(idempotency_key)

    @property
    def keys(self) -> list[str]:
        return [key for _, _, key in self.calls]


def recording(deps: Deps, gateway: SandboxGateway) -> tuple[Deps, RecordingGateway]:
    spy = RecordingGateway(gateway)
    return replace(deps, gateway=spy), spy


class HeldGateway:
    """Wraps the sandbox, holding each charge call until the test lets it through (`release`): a slow gateway.
    `entered` is set once a charge call is in flight; lookups are answered at once. With `lose_answer`, a charge
    goes through and its caller gets a timeout instead of the answer."""

    def __init__(self, inner: SandboxGateway, *, lose_answer: bool = False) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.lose_answer = lose_answer

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        self.entered.set()
        await self.release.wait()
        result = await self.inner.charge(token, amount, idempotency_key)
        if self.lose_answer:
            raise TimeoutError("the gateway's answer was lost")
        return result

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self.inner.find_charge(idempotency_key)


async def charge_outlasting_its_lease(deps: Deps, gateway: SandboxGateway, clock: Clock,
                                       change: Callable[[], Awaitable[object]], *, lose_answer: bool = False,
                                      ) -> tuple[Deps, recharges.Claim, asyncio.Task[recharges.ChargeOutcome]]:
    """A worker's charge is in flight when its lease runs out and `change` makes the attempt no longer chargeable;
    another worker takes the attempt over, finds no charge by its key yet, and cancels it. Returns the slow worker's
    deps, claim and charge, still held by the gateway; with `lose_answer`, the charge goes through and its answer is
    lost (the charge's outcome is then None)."""
    slow = HeldGateway(gateway, lose_answer=lose_answer)
    slow_deps = replace(deps, gateway=slow)
    claim = await recharges.claim_next(slow_deps)
    assert claim is not None
    in_flight = asyncio.create_task(recharges.charge(slow_deps, claim))
    await slow.entered.wait()
    clock.advance(seconds=61)
    await change()
    other = await recharges.claim_next(deps)
    assert other is not None
    assert (other.attempt.id, other.reclaimed) == (claim.attempt.id, True)
    cancelled = await recharges.settle(deps, other, await recharges.charge(deps, other))
    assert cancelled is not None
    assert cancelled.status is AttemptStatus.FAILED
    slow.release.set()
    return slow_deps, claim, in_flight


async def overwrite_account(deps: Deps, account_id: int, **columns: int) -> None:
    """Writes to an account row behind the service's back, as a faulty release or a hand-made fix would."""
    async with deps.uow(write=True) as uow:
        await uow.connection.execute(  # type: ignore[attr-defined]
            update(accounts_table).where(accounts_table.c.id == account_id).values(**columns))
        await uow.commit()


async def credit_in_one_entry(deps: Deps, account_id: int, micros: int) -> None:
    """Credits the account as one FUNDS_ADDED entry, written through the repositories without a charge: a history
    too long to build through the service."""
    async with deps.uow(write=True) as uow:
        account = await uow.accounts.get_any(account_id, for_update=True)
        assert account is not None
        await uow.ledger.append(account.credit(EntryKind.FUNDS_ADDED, micros, deps.clock()))
        await uow.accounts.save(account)
        await uow.commit()
