"""The persistence contract the use cases depend on; `store` implements it on SQLAlchemy."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Protocol, Self

from credits_graphql.domain.access import Role
from credits_graphql.domain.funds import FundsCharge, FundsChargeStatus
from credits_graphql.domain.ledger import Account, AccountStatus, EntryKind, LedgerEntry
from credits_graphql.domain.recharge import RechargeAttempt


@dataclass(frozen=True, slots=True)
class Organization:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    org_id: int
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None
    key_hash: str = field(default="", repr=False)

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class KindTally:
    """An account's ledger entries of one kind: how many, and their sum."""

    account_id: int
    kind: EntryKind
    entries: int
    sum_micros: int


class KeyAlreadyUsed(Exception):
    """An entry's idempotency key, taken for new, was used already: see `append_many_unless_keys_used`."""


class AuditOutcome(StrEnum):
    OK = "OK"
    USER_ERROR = "USER_ERROR"
    """The mutation answered userErrors and changed nothing."""
    ERROR = "ERROR"
    """The mutation answered a GraphQL error (FORBIDDEN, BAD_USER_INPUT, INTERNAL_SERVER_ERROR, ...)."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what, when, and how it ended. Never updated or deleted once recorded."""

    org_id: int
    api_key_id: int
    operation: str
    account_id: int | None
    input_summary: Mapping[str, str | None]
    outcome: AuditOutcome
    error_codes: tuple[str, ...]
    occurred_at: datetime
    id: int | None = None


class AccountRepository(Protocol):
    async def add(self, account: Account) -> Account: ...
    async def get(self, org_id: int, account_id: int, *, for_update: bool = False) -> Account | None: ...
    async def get_any(self, account_id: int, *, for_update: bool = False) -> Account | None: ...
    async def get_many(self, org_id: int, account_ids: Collection[int]) -> list[Account]: ...
    async def lock_many(self, owned: Collection[tuple[int, int]]) -> list[Account]:
        """The accounts among these (organization id, account id) pairs that the organization given with each owns,
        locked for update in ascending id order."""
        ...
    async def lock_after(self, after_id: int | None, limit: int) -> list[Account]:
        """The next `limit` accounts of every organization, by ascending id after `after_id`, locked for update."""
        ...
    async def save(self, account: Account) -> None: ...
    async def save_many(self, accounts: Sequence[Account]) -> None:
        """Each account saved, as `save` would, in one trip to the database."""
        ...
    async def page(self, org_id: int, status: AccountStatus | None, before_id: int | None,
                   limit: int) -> list[Account]: ...
    async def count(self, org_id: int, status: AccountStatus | None = None) -> int: ...


class LedgerRepository(Protocol):
    async def append(self, entry: LedgerEntry) -> LedgerEntry: ...
    async def append_many(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """Stores entries that each carry an idempotency key, in the order given; returns them with their ids."""
        ...
    async def append_unless_key_used(self, entry: LedgerEntry) -> LedgerEntry | None:
        """`append` for an entry with an idempotency key: None, and nothing stored, when the account has an entry
        with that key already."""
        ...
    async def append_many_unless_keys_used(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """`append_many`, for entries whose keys were not looked up: raises KeyAlreadyUsed when an account has an
        entry with one of these keys already, after which the transaction must not commit (the other entries may
        have been stored)."""
        ...
    async def by_idempotency_key(self, account_id: int, key: str) -> LedgerEntry | None: ...
    async def tally(self, account_ids: Collection[int]) -> list[KindTally]:
        """Of each of these accounts, its entries counted and summed by kind (kinds without entries left out)."""
        ...
    async def newest_balances_after(self, account_ids: Collection[int]) -> dict[int, int]:
        """Of each of these accounts that has entries, its newest entry's balance after it, by account id."""
        ...
    async def by_idempotency_keys(self, keys: Collection[tuple[int, str]]) -> list[LedgerEntry]:
        """The entries that used these (account id, idempotency key) pairs."""
        ...
    async def get_many(self, org_id: int, entry_ids: Collection[int]) -> list[LedgerEntry]: ...
    async def page(self, account_id: int, kinds: Collection[EntryKind] | None, before_id: int | None,
                   limit: int) -> list[LedgerEntry]: ...
    async def count(self, account_id: int, kinds: Collection[EntryKind] | None) -> int: ...
    async def total(self, account_id: int) -> int: ...


class RechargeAttemptRepository(Protocol):
    async def add(self, attempt: RechargeAttempt) -> RechargeAttempt: ...
    async def save(self, attempt: RechargeAttempt) -> None: ...
    async def get(self, attempt_id: int, *, for_update: bool = False) -> RechargeAttempt | None: ...
    async def get_many(self, org_id: int, attempt_ids: Collection[int]) -> list[RechargeAttempt]: ...
    async def pending(self, account_id: int, *, for_update: bool = False) -> RechargeAttempt | None:
        """With `for_update`, waits for a worker claiming it and returns the attempt as the worker left it."""
        ...
    async def pending_for_accounts(self, account_ids: Collection[int]) -> list[RechargeAttempt]: ...
    async def triggered_by(self, entry_id: int) -> RechargeAttempt | None: ...
    async def triggered_by_many(self, entry_ids: Collection[int]) -> list[RechargeAttempt]: ...
    async def next_due(self, now: datetime) -> RechargeAttempt | None:
        """The oldest due PENDING attempt whose lease is free, locked and skipped by other workers."""
        ...
    async def page(self, account_id: int, before_id: int | None, limit: int) -> list[RechargeAttempt]: ...
    async def count(self, account_id: int) -> int: ...
    async def cancelled_since(self, since: datetime, after_id: int | None, limit: int) -> list[RechargeAttempt]:
        """A page of the attempts cancelled (domain.recharge.CANCELLED) at or after `since`, by id after `after_id`."""
        ...


class FundsChargeRepository(Protocol):
    async def add(self, charge: FundsCharge) -> FundsCharge: ...
    async def save(self, charge: FundsCharge) -> None: ...
    async def get(self, charge_id: int, *, for_update: bool = False) -> FundsCharge | None: ...
    async def by_key(self, account_id: int, idempotency_key: str, status: FundsChargeStatus) -> FundsCharge | None:
        """The account's charge with this key and status: a key has at most one PENDING and one SUCCEEDED."""
        ...

    async def pending_micros(self, account_id: int) -> int:
        """What the account's charges in flight add up to."""
        ...

    async def count_by_key(self, account_id: int, idempotency_key: str) -> int:
        """How many charges the account has with this key, of any status."""
        ...
    async def next_stale(self, created_before: datetime, now: datetime) -> FundsCharge | None:
        """The oldest PENDING charge written before `created_before` whose lease is free, locked and
        skipped by other workers."""
        ...
    async def cancelled_since(self, since: datetime, after_id: int | None, limit: int) -> list[FundsCharge]:
        """A page of the charges cancelled (domain.recharge.CANCELLED) at or after `since`, by id after `after_id`."""
        ...


class OrganizationRepository(Protocol):
    async def add(self, name: str, at: datetime) -> Organization: ...
    async def get(self, org_id: int) -> Organization | None: ...
    async def count(self) -> int: ...


class ApiKeyRepository(Protocol):
    async def add(self, org_id: int, role: Role, key_hash: str, prefix: str, at: datetime,
                  expires_at: datetime | None = None) -> ApiKey: ...
    async def by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def by_hash_with_account(self, key_hash: str, account_id: int) -> tuple[ApiKey, Account | None] | None:
        """The key, and its organization's account of that id (None when there is none), in one read."""
    async def by_hashes_with_accounts(self, reads: Collection[tuple[str, int | None]]
                                      ) -> dict[tuple[str, int | None], tuple[ApiKey, Account | None]]:
        """`by_hash_with_account` (`by_hash` where the account id is None) of each (key hash, account id) given, in
        one read where the database allows: the pairs with a key, each with its key and account."""
        ...
    async def list(self, org_id: int) -> Sequence[ApiKey]: ...
    async def revoke(self, key_id: int, at: datetime) -> bool: ...
    async def touch(self, key_id: int, at: datetime) -> None: ...


class AuditEventRepository(Protocol):
    """Append and read only: there is deliberately no way to change or remove an event."""

    async def append(self, event: AuditEvent) -> AuditEvent: ...
    async def record(self, event: AuditEvent) -> None:
        """`append` for a caller that needs no id back; the store may send it with the transaction's next
        statement."""
        ...
    async def record_many(self, events: Sequence[AuditEvent]) -> None: ...
    async def get(self, org_id: int, event_id: int) -> AuditEvent | None: ...
    async def page(self, org_id: int, before_id: int | None, limit: int) -> list[AuditEvent]: ...
    async def count(self, org_id: int) -> int: ...


class UnitOfWork(Protocol):
    """One database transaction. Leaving the block without `commit()` rolls everything back."""

    accounts: AccountRepository
    ledger: LedgerRepository
    attempts: RechargeAttemptRepository
    funds_charges: FundsChargeRepository
    organizations: OrganizationRepository
    api_keys: ApiKeyRepository
    audit_events: AuditEventRepository
    committed: bool
    """`commit()` succeeded."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...
    async def commit(self) -> None: ...
    async def database_time(self) -> datetime | None:
        """The database server's clock now; None when the database runs in this process (SQLite)."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = False) -> AbstractAsyncContextManager[UnitOfWork]: ...


Clock = Callable[[], datetime]
