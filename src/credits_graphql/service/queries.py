"""Reads, always scoped to the caller's organization: another organization's rows do not exist."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from credits_graphql.domain.ledger import Account, AccountStatus, EntryKind, LedgerEntry
from credits_graphql.domain.recharge import RechargeAttempt
from credits_graphql.service.deps import Deps

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """`limit` rows newest first after a keyset position, and whether more follow."""

    items: Sequence[T]
    has_next: bool

    @classmethod
    def of(cls, rows: Sequence[T], limit: int) -> Page[T]:
        """`rows` holds up to `limit + 1` rows: the extra one only tells that more follow."""
        return cls(rows[:limit], len(rows) > limit)


async def account(deps: Deps, org_id: int, account_id: int) -> Account | None:
    async with deps.uow() as uow:
        return await uow.accounts.get(org_id, account_id)


async def accounts_by_id(deps: Deps, org_id: int, ids: Collection[int]) -> dict[int, Account]:
    async with deps.uow() as uow:
        return {a.id: a for a in await uow.accounts.get_many(org_id, ids)}


async def accounts_page(deps: Deps, org_id: int, status: AccountStatus | None, before_id: int | None,
                        limit: int) -> Page[Account]:
    async with deps.uow() as uow:
        rows = await uow.accounts.page(org_id, status, before_id, limit + 1)
    return Page.of(rows, limit)


async def count_accounts(deps: Deps, org_id: int, status: AccountStatus | None = None) -> int:
    async with deps.uow() as uow:
        return await uow.accounts.count(org_id, status)


async def entries_by_id(deps: Deps, org_id: int, ids: Collection[int]) -> dict[int, LedgerEntry]:
    async with deps.uow() as uow:
        return {e.id: e for e in await uow.ledger.get_many(org_id, ids) if e.id is not None}


async def entries_page(deps: Deps, account_id: int, kinds: Collection[EntryKind] | None,
                       before_id: int | None, limit: int) -> Page[LedgerEntry]:
    """The caller has checked that the account belongs to its organization."""
    async with deps.uow() as uow:
        rows = await uow.ledger.page(account_id, kinds, before_id, limit + 1)
    return Page.of(rows, limit)


async def count_entries(deps: Deps, account_id: int, kinds: Collection[EntryKind] | None) -> int:
    async with deps.uow() as uow:
        return await uow.ledger.count(account_id, kinds)


async def attempts_by_id(deps: Deps, org_id: int, ids: Collection[int]) -> dict[int, RechargeAttempt]:
    async with deps.uow() as uow:
        return {a.id: a for a in await uow.attempts.get_many(org_id, ids) if a.id is not None}


async def pending_attempts(deps: Deps, account_ids: Collection[int]) -> dict[int, RechargeAttempt]:
    async with deps.uow() as uow:
        return {a.account_id: a for a in await uow.attempts.pending_for_accounts(account_ids)}


async def attempts_page(deps: Deps, account_id: int, before_id: int | None,
                        limit: int) -> Page[RechargeAttempt]:
    async with deps.uow() as uow:
        rows = await uow.attempts.page(account_id, before_id, limit + 1)
    return Page.of(rows, limit)


async def count_attempts(deps: Deps, account_id: int) -> int:
    async with deps.uow() as uow:
        return await uow.attempts.count(account_id)
