"""Per-request context: the caller, the use-case dependencies and the request's DataLoaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from strawberry.dataloader import DataLoader

from credits_graphql.domain.access import Principal
from credits_graphql.domain.ledger import Account, LedgerEntry
from credits_graphql.domain.recharge import RechargeAttempt
from credits_graphql.service import queries
from credits_graphql.service.deps import Deps
from credits_graphql.service.usage_combiner import UsageCombiner

V = TypeVar("V")


def _loader(fetch: Callable[[list[int]], Awaitable[dict[int, V]]]) -> DataLoader[int, V | None]:
    async def load(keys: list[int]) -> list[V | None]:
        found = await fetch(keys)
        return [found.get(key) for key in keys]

    return DataLoader(load_fn=load)


@dataclass
class Loaders:
    accounts: DataLoader[int, Account | None]
    entries: DataLoader[int, LedgerEntry | None]
    pending_attempts: DataLoader[int, RechargeAttempt | None]
    """Keyed by account id."""

    @classmethod
    def for_request(cls, deps: Deps, org_id: int) -> Loaders:
        return cls(
            accounts=_loader(lambda ids: queries.accounts_by_id(deps, org_id, ids)),
            entries=_loader(lambda ids: queries.entries_by_id(deps, org_id, ids)),
            pending_attempts=_loader(lambda ids: queries.pending_attempts(deps, ids)),
        )


@dataclass
class Context:
    deps: Deps
    principal: Principal
    usage: UsageCombiner
    """The process's usage reports, which concurrent requests share transactions through."""
    request_id: str = ""
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders.for_request(self.deps, self.principal.org_id)

    @property
    def org_id(self) -> int:
        return self.principal.org_id

    def prime_accounts(self, accounts: Iterable[Account]) -> None:
        for account in accounts:
            self.loaders.accounts.prime(account.id, account, force=True)
