"""An operator's check of the ledger's invariants: every account's balance equals the sum of its entries and its
newest entry's balance after it, and its per-kind entry counts (what `transactions { totalCount }` reads) equal its
entries. The counts can be corrected (after a rolling restart across migration 0004, say); a balance never is: that
is for a person to look into."""

from __future__ import annotations

from dataclasses import dataclass, field

from credits_graphql.domain.ledger import Account, EntryKind
from credits_graphql.domain.money import Money
from credits_graphql.service.deps import Deps
from credits_graphql.service.transient import retry_on_conflict

BATCH = 200
"""Accounts checked in one transaction. Their writes wait while it runs: a sum over their entries each."""


@dataclass(frozen=True, slots=True)
class BalanceOff:
    account_id: int
    balance: Money
    entries_sum: Money
    newest_balance_after: Money | None
    """What the newest entry says the balance became (None without entries)."""


@dataclass(slots=True)
class LedgerCheck:
    accounts: int = 0
    balances_off: list[BalanceOff] = field(default_factory=list)
    counts_off: list[int] = field(default_factory=list)
    """The accounts whose entry counts were off (corrected, when asked)."""

    @property
    def is_sound(self) -> bool:
        return not self.balances_off and not self.counts_off


async def check_ledger(deps: Deps, *, correct_counts: bool = False, batch: int = BATCH) -> LedgerCheck:
    """Checks every account, `batch` at a time, each batch locked while it is checked, so that a write in flight
    is seen whole or not at all."""
    report = LedgerCheck()
    after: int | None = None
    while (checked := await _check_batch(deps, after, batch, correct_counts)) is not None:
        after, part = checked
        report.accounts += part.accounts
        report.balances_off += part.balances_off
        report.counts_off += part.counts_off
    return report


@retry_on_conflict
async def _check_batch(deps: Deps, after: int | None, batch: int,
                       correct_counts: bool) -> tuple[int, LedgerCheck] | None:
    """The last account id checked and what was found, or None when no account is left."""
    async with deps.uow(write=True) as uow:
        accounts = await uow.accounts.lock_after(after, batch)
        if not accounts:
            return None
        counts: dict[int, dict[EntryKind, int]] = {account.id: dict.fromkeys(EntryKind, 0) for account in accounts}
        sums = dict.fromkeys(counts, 0)
        for tally in await uow.ledger.tally(counts):
            counts[tally.account_id][tally.kind] = tally.entries
            sums[tally.account_id] += tally.sum_micros
        newest = await uow.ledger.newest_balances_after(counts)
        part = LedgerCheck(accounts=len(accounts))
        miscounted: list[Account] = []
        for account in accounts:
            balance_after = newest.get(account.id)
            if sums[account.id] != account.balance_micros or balance_after not in (None, account.balance_micros):
                part.balances_off.append(BalanceOff(
                    account.id, account.balance, Money(sums[account.id], account.currency),
                    Money(balance_after, account.currency) if balance_after is not None else None))
            if counts[account.id] != account.entry_counts:
                part.counts_off.append(account.id)
                if correct_counts:
                    account.entry_counts = counts[account.id]
                    miscounted.append(account)
        await uow.accounts.save_many(miscounted)
        await uow.commit()
    return accounts[-1].id, part
