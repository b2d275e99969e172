"""Repositories: SQLAlchemy Core statements mapping rows to and from domain objects."""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Row,
    Select,
    String,
    Table,
    and_,
    bindparam,
    column,
    func,
    insert,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from credits_graphql.domain.access import Role
from credits_graphql.domain.funds import FundsCharge, FundsChargeStatus
from credits_graphql.domain.ledger import (
    Account,
    AccountStatus,
    CreditService,
    EntryKind,
    LedgerEntry,
    PaymentMethod,
)
from credits_graphql.domain.recharge import AttemptStatus, RechargeAttempt, RechargeSettings, RechargeStatus
from credits_graphql.service.unit_of_work import (
    ApiKey,
    AuditEvent,
    AuditOutcome,
    KeyAlreadyUsed,
    KindTally,
    Organization,
)
from credits_graphql.store.connection import StoreConnection
from credits_graphql.store.engine import UNREAD_OPTION
from credits_graphql.store.tables import (
    CANCELLED_ATTEMPT,
    CANCELLED_FUNDS_CHARGE,
    accounts,
    api_keys,
    audit_events,
    funds_charges,
    ledger_entries,
    organizations,
    recharge_attempts,
)


def _given(*columns: tuple[str, str, TypeEngine[Any]], with_ordinality: str | None = None) -> TableValuedAlias:
    """PostgreSQL: rows given as one array parameter per column, each (parameter, column, type): one statement text
    for any number of rows; `with_ordinality` names a column of each row's position (from 1)."""
    return func.unnest(*(bindparam(parameter, type_=ARRAY(type_)) for parameter, _, type_ in columns)).table_valued(
        *(column(name, type_) for _, name, type_ in columns), with_ordinality=with_ordinality).render_derived()


# The statements of the hot paths (every request, every usage report) are built once: building a select and
# its cache key costs more than SQLite takes to run it. The ones run through StoreConnection's point_read, write
# and write_returning also skip SQLAlchemy's pipeline: a read unit of work's run on the point reader
# (store/point_reads.py), a write transaction's on its own connection (store/transaction_statements.py).
_KEY_BY_HASH = select(api_keys).where(api_keys.c.key_hash == bindparam("key_hash"))
_ACCOUNT = select(accounts).where(accounts.c.id == bindparam("account_id"), accounts.c.org_id == bindparam("org_id"))
_ACCOUNT_FOR_UPDATE = _ACCOUNT.with_for_update()
# PostgreSQL: the accounts of a group of usage reports, each given with its organization, locked in ascending id
# order by one statement text for any number of accounts (an account named with another organization is not
# locked).
_GIVEN_ACCOUNTS = _given(("org_ids", "org_id", BigInteger()), ("account_ids", "account_id", BigInteger()))
_ACCOUNTS_FOR_UPDATE_POSTGRESQL = select(accounts).select_from(_GIVEN_ACCOUNTS).join(
    accounts, and_(accounts.c.id == _GIVEN_ACCOUNTS.c.account_id, accounts.c.org_id == _GIVEN_ACCOUNTS.c.org_id),
).order_by(accounts.c.id).with_for_update(of=accounts)
# A key and an account of its organization in one statement: the account's columns labelled apart, split off by
# position (_KEY_COLUMNS), and all NULL when there is no such account.
_KEY_COLUMNS = len(api_keys.c)
_ACCOUNT_ROW: Any = namedtuple("_ACCOUNT_ROW", [column.key for column in accounts.c])  # type: ignore[misc]
_KEY_AND_ACCOUNT = select(api_keys, *(column.label(f"account_{column.key}") for column in accounts.c)).select_from(
    api_keys.outerjoin(accounts, and_(accounts.c.id == bindparam("account_id"),
                                      accounts.c.org_id == api_keys.c.org_id)),
).where(api_keys.c.key_hash == bindparam("key_hash"))
# PostgreSQL: several keys, each with an account of its organization, in one statement (key reads taken together,
# service/key_reads.py): each given pair comes back with its key's row when there is one, and its account's.
_GIVEN_KEY_READS = _given(("key_hashes", "key_hash", String()), ("account_ids", "account_id", BigInteger()))
_KEYS_AND_ACCOUNTS = select(
    api_keys, *(column.label(f"account_{column.key}") for column in accounts.c),
    _GIVEN_KEY_READS.c.key_hash.label("given_key_hash"), _GIVEN_KEY_READS.c.account_id.label("given_account_id"),
).select_from(_GIVEN_KEY_READS.join(api_keys, api_keys.c.key_hash == _GIVEN_KEY_READS.c.key_hash).outerjoin(
    accounts, and_(accounts.c.id == _GIVEN_KEY_READS.c.account_id, accounts.c.org_id == api_keys.c.org_id)))
_ACCOUNTS = select(accounts).where(accounts.c.org_id == bindparam("org_id"),
                                   accounts.c.id.in_(bindparam("account_ids", expanding=True)))
_PENDING_ATTEMPT = select(recharge_attempts).where(
    recharge_attempts.c.account_id == bindparam("account_id"),
    recharge_attempts.c.status == AttemptStatus.PENDING)
_PENDING_ATTEMPTS = select(recharge_attempts).where(
    recharge_attempts.c.account_id.in_(bindparam("account_ids", expanding=True)),
    recharge_attempts.c.status == AttemptStatus.PENDING)
_SAVE_ACCOUNT = update(accounts).where(accounts.c.id == bindparam("account_id"))  # SET: the values given
_APPEND_ENTRY = insert(ledger_entries).returning(ledger_entries.c.id, sort_by_parameter_order=True)
# Each dialect's INSERT ... ON CONFLICT: a used key is found by the insert itself, not by a lookup before it.
_APPEND_ENTRY_UNLESS_KEY_USED = {
    name: dialect.insert(ledger_entries).on_conflict_do_nothing(
        index_elements=[ledger_entries.c.account_id, ledger_entries.c.idempotency_key]).returning(ledger_entries.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
_APPEND_AUDIT_EVENT = insert(audit_events).returning(audit_events.c.id)
_RECORD_AUDIT_EVENT = insert(audit_events)
_UNREAD = {UNREAD_OPTION: True}
_ENTRY_BY_KEY = select(ledger_entries).where(ledger_entries.c.account_id == bindparam("account_id"),
                                             ledger_entries.c.idempotency_key == bindparam("key"))
# PostgreSQL: one probe of the unique (account, key) index per pair, whatever the table's size or statistics. An IN
# list of the keys let PostgreSQL scan every entry of the account instead and compare each row with every key:
# asyncpg's prepared statement gets a generic plan after five runs, which cannot hash a list of parameters, so a
# 1000-key batch cost seconds once the account had some 20,000 entries. The pairs go as two arrays (one statement
# text for any batch size) and the lateral subquery with LIMIT 1 cannot be turned into a join that scans the
# account's entries.
_GIVEN_KEYS = _given(("account_ids", "account_id", BigInteger()), ("keys", "idempotency_key", String()))
_ENTRY_OF_GIVEN_KEY = (select(ledger_entries)
                       .where(ledger_entries.c.account_id == _GIVEN_KEYS.c.account_id,
                              ledger_entries.c.idempotency_key == _GIVEN_KEYS.c.idempotency_key)
                       .limit(1).lateral())
_ENTRIES_BY_KEYS_POSTGRESQL = select(_ENTRY_OF_GIVEN_KEY).select_from(_GIVEN_KEYS).join(_ENTRY_OF_GIVEN_KEY, true())
# SQLite: an account's entries of the keys given as one JSON array, each found through the unique (account, key)
# index (a row-value IN of the pairs would scan the account's entries).
_ENTRIES_BY_KEYS_SQLITE = select(ledger_entries).where(
    ledger_entries.c.account_id == bindparam("account_id"),
    ledger_entries.c.idempotency_key.in_(select(func.json_each(bindparam("keys")).table_valued("value").c.value)))


def _accounts_of(org_id: int, status: AccountStatus | None) -> list[ColumnElement[bool]]:
    """An organization's accounts, of one status or all: walked on (org_id, id), filtering the status (an
    organization holds hundreds or thousands of accounts, not millions)."""
    return [accounts.c.org_id == org_id, *([accounts.c.status == status] if status is not None else [])]


class SqlAccountRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def add(self, account: Account) -> Account:
        values = _account_values(account)
        values.update(org_id=account.org_id, currency=account.currency, created_at=account.created_at)
        account.id = await _insert_returning_id(self._connection, accounts, values)
        return account

    async def get(self, org_id: int, account_id: int, *, for_update: bool = False) -> Account | None:
        values = {"account_id": account_id, "org_id": org_id}
        if for_update:
            row = await self._connection.point_read_one(_ACCOUNT_FOR_UPDATE, values)
        else:
            row = await self._connection.point_read_one(_ACCOUNT, values)
        return _account(row) if row is not None else None

    async def get_any(self, account_id: int, *, for_update: bool = False) -> Account | None:
        query = select(accounts).where(accounts.c.id == account_id)
        return await self._one(query.with_for_update() if for_update else query)

    async def get_many(self, org_id: int, account_ids: Collection[int]) -> list[Account]:
        if len(account_ids) == 1:  # a request's usual batch: `=` spares the expanding IN's per-call rewrite
            [account_id] = account_ids
            found = await self.get(org_id, account_id)
            return [found] if found is not None else []
        rows = await self._connection.execute(_ACCOUNTS, {"org_id": org_id, "account_ids": list(account_ids)})
        return [_account(row) for row in rows]

    async def lock_many(self, owned: Collection[tuple[int, int]]) -> list[Account]:
        # Locked in ascending id order, so that two transactions locking overlapping sets cannot deadlock.
        pairs = sorted(set(owned), key=lambda pair: pair[1])
        if len(pairs) == 1 or self._connection.dialect.name == "sqlite":
            # lock_account's compiled statement for each (on SQLite all in one trip to the connection's thread):
            # no statement to build and render for each batch, or each group of reports (service/usage_combiner.py).
            found = await self._connection.point_read_each(_ACCOUNT_FOR_UPDATE, [
                {"account_id": account_id, "org_id": org_id} for org_id, account_id in pairs])
            return [_account(rows[0]) for rows in found if rows]
        rows = await self._connection.point_read(_ACCOUNTS_FOR_UPDATE_POSTGRESQL, {
            "org_ids": [org_id for org_id, _ in pairs], "account_ids": [account_id for _, account_id in pairs]})
        return [_account(row) for row in rows]

    async def lock_after(self, after_id: int | None, limit: int) -> list[Account]:
        query = select(accounts)
        if after_id is not None:
            query = query.where(accounts.c.id > after_id)
        rows = await self._connection.execute(query.order_by(accounts.c.id).limit(limit).with_for_update())
        return [_account(row) for row in rows]

    async def save(self, account: Account) -> None:
        await self._connection.write(_SAVE_ACCOUNT, {"account_id": account.id, **_account_values(account)})

    async def save_many(self, accounts: Sequence[Account]) -> None:
        if accounts:
            await self._connection.write_many(_SAVE_ACCOUNT, [
                {"account_id": account.id, **_account_values(account)} for account in accounts])

    async def page(self, org_id: int, status: AccountStatus | None, before_id: int | None,
                   limit: int) -> list[Account]:
        query = select(accounts).where(*_accounts_of(org_id, status))
        if before_id is not None:
            query = query.where(accounts.c.id < before_id)
        rows = await self._connection.execute(query.order_by(accounts.c.id.desc()).limit(limit))
        return [_account(row) for row in rows]

    async def count(self, org_id: int, status: AccountStatus | None = None) -> int:
        return await _count(self._connection, select(func.count()).where(*_accounts_of(org_id, status)))

    async def _one(self, query: Select[Any]) -> Account | None:
        row = (await self._connection.execute(query)).first()
        return _account(row) if row is not None else None


class SqlLedgerRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def append(self, entry: LedgerEntry) -> LedgerEntry:
        values = _fields(entry, _ENTRY_FIELDS)
        [(entry_id,)] = await self._connection.write_returning(_APPEND_ENTRY, values)
        return LedgerEntry(id=entry_id, **values)

    async def append_unless_key_used(self, entry: LedgerEntry) -> LedgerEntry | None:
        values = _fields(entry, _ENTRY_FIELDS)
        statement = _APPEND_ENTRY_UNLESS_KEY_USED[self._connection.dialect.name]
        rows = await self._connection.write_returning(statement, values)
        return LedgerEntry(id=rows[0][0], **values) if rows else None

    async def append_many(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        return await self._append_many(entries, unless_keys_used=False)

    async def append_many_unless_keys_used(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        return await self._append_many(entries, unless_keys_used=True)

    async def _append_many(self, entries: Sequence[LedgerEntry], *, unless_keys_used: bool) -> list[LedgerEntry]:
        if not entries:
            return []
        values = [_fields(entry, _ENTRY_FIELDS) for entry in entries]
        if self._connection.dialect.name == "postgresql":
            # One statement of arrays. The ids are drawn in the entries' order, so the ascending ids are the entries'
            # in order (as SQLAlchemy's insertmanyvalues takes them on PostgreSQL).
            statement = _APPEND_ENTRIES_UNLESS_KEYS_USED_POSTGRESQL if unless_keys_used else _APPEND_ENTRIES_POSTGRESQL
            ids = sorted(entry_id for (entry_id,) in await self._connection.write_returning(statement, {
                f"each_{name}": [value[name] for value in values] for name in _ENTRY_FIELDS}))
        else:
            # SQLite, always on our driver (store/engine.py): each entry its own statement, in order, in one trip to
            # the connection's thread; an insert that found its key used returns no row.
            one = _APPEND_ENTRY_UNLESS_KEY_USED[self._connection.dialect.name] if unless_keys_used else _APPEND_ENTRY
            found = await self._connection.write_each_returning(one, values)
            ids = [entry_id for rows in found for (entry_id,) in rows]
        if len(ids) != len(values):
            raise KeyAlreadyUsed
        # LedgerEntry(**) on the values already at hand: dataclasses.replace() costs ~3 ms per 1000 entries.
        return [LedgerEntry(id=entry_id, **value) for value, entry_id in zip(values, ids, strict=True)]

    async def by_idempotency_key(self, account_id: int, key: str) -> LedgerEntry | None:
        row = await self._connection.point_read_one(_ENTRY_BY_KEY, {"account_id": account_id, "key": key})
        return _entry(row) if row is not None else None

    async def by_idempotency_keys(self, keys: Collection[tuple[int, str]]) -> list[LedgerEntry]:
        """Each statement has one text for any number of keys, compiled once (store/compiled.py)."""
        if not keys:
            return []
        pairs = sorted(set(keys))
        if self._connection.dialect.name == "postgresql":
            return [_entry(row) for row in await self._connection.point_read(_ENTRIES_BY_KEYS_POSTGRESQL, {
                "account_ids": [account_id for account_id, _ in pairs], "keys": [key for _, key in pairs]})]
        by_account: dict[int, list[str]] = {}
        for account_id, key in pairs:
            by_account.setdefault(account_id, []).append(key)
        found = await self._connection.point_read_each(_ENTRIES_BY_KEYS_SQLITE, [
            {"account_id": account_id, "keys": json.dumps(keys)} for account_id, keys in by_account.items()])
        return [_entry(row) for rows in found for row in rows]

    async def get_many(self, org_id: int, entry_ids: Collection[int]) -> list[LedgerEntry]:
        rows = await self._connection.execute(
            select(ledger_entries).join(accounts, accounts.c.id == ledger_entries.c.account_id)
            .where(accounts.c.org_id == org_id, ledger_entries.c.id.in_(list(entry_ids))))
        return [_entry(row) for row in rows]

    async def page(self, account_id: int, kinds: Collection[EntryKind] | None, before_id: int | None,
                   limit: int) -> list[LedgerEntry]:
        def newest(kind: EntryKind | None) -> Select[Any]:
            query = _entries_of(select(ledger_entries), account_id, [kind] if kind else None)
            if before_id is not None:
                query = query.where(ledger_entries.c.id < before_id)
            return query.order_by(ledger_entries.c.id.desc()).limit(limit)

        wanted = set(kinds or ()) & set(EntryKind)
        if len(wanted) in (0, len(EntryKind)):
            query = newest(None)
        elif len(wanted) == 1:
            query = newest(wanted.pop())
        else:
            # Each kind's newest from its own index, merged: `kind IN (...) ORDER BY id DESC` walks the account's
            # whole history on SQLite when the kinds asked for are rare (top-ups among a million usage entries).
            merged = union_all(*(select(newest(kind).subquery()) for kind in sorted(wanted))).subquery()
            query = select(merged).order_by(merged.c.id.desc()).limit(limit)
        return [_entry(row) for row in await self._connection.execute(query)]

    async def count(self, account_id: int, kinds: Collection[EntryKind] | None) -> int:
        """From the per-kind counters on the account row, which every append keeps (constant time)."""
        columns = [accounts.c[column] for kind, column in _ENTRY_COUNT_COLUMNS.items() if not kinds or kind in kinds]
        if not columns:
            return 0
        total = sum(columns[1:], columns[0])
        return await _count(self._connection, select(total).where(accounts.c.id == account_id))

    async def tally(self, account_ids: Collection[int]) -> list[KindTally]:
        # An account's credits over its life may add up past 2**63 micros (its balance never does), where SQLite's
        # sum() of integers fails. So each amount is summed as its multiple of 2**32 and the rest (both databases
        # divide integers toward zero, and the rest keeps the amount's sign): sums far inside 64 bits, put back
        # together exactly here.
        entries, split = ledger_entries.c, 2**32
        rows = await self._connection.execute(
            select(entries.account_id, entries.kind, func.count().label("entries"),
                   func.sum(entries.amount_micros // split).label("high"),
                   func.sum(entries.amount_micros % split).label("low"))
            .where(entries.account_id.in_(list(account_ids))).group_by(entries.account_id, entries.kind))
        return [KindTally(row.account_id, EntryKind(row.kind), row.entries, int(row.high) * split + int(row.low))
                for row in rows]

    async def newest_balances_after(self, account_ids: Collection[int]) -> dict[int, int]:
        entries = ledger_entries.c
        newest = (select(func.max(entries.id)).where(entries.account_id.in_(list(account_ids)))
                  .group_by(entries.account_id))
        rows = await self._connection.execute(
            select(entries.account_id, entries.balance_after_micros).where(entries.id.in_(newest.scalar_subquery())))
        return {row.account_id: row.balance_after_micros for row in rows}

    async def total(self, account_id: int) -> int:
        query = select(func.coalesce(func.sum(ledger_entries.c.amount_micros), 0)).where(
            ledger_entries.c.account_id == account_id)
        return int((await self._connection.execute(query)).scalar_one())


class SqlRechargeAttemptRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def add(self, attempt: RechargeAttempt) -> RechargeAttempt:
        attempt.id = await _insert_returning_id(self._connection, recharge_attempts, _fields(attempt, _ATTEMPT_FIELDS))
        return attempt

    async def save(self, attempt: RechargeAttempt) -> None:
        await _update_unread(self._connection, recharge_attempts, attempt.id, _fields(attempt, _ATTEMPT_FIELDS))

    async def get(self, attempt_id: int, *, for_update: bool = False) -> RechargeAttempt | None:
        query = select(recharge_attempts).where(recharge_attempts.c.id == attempt_id)
        return await self._one(query.with_for_update() if for_update else query)

    async def get_many(self, org_id: int, attempt_ids: Collection[int]) -> list[RechargeAttempt]:
        rows = await self._connection.execute(
            select(recharge_attempts).join(accounts, accounts.c.id == recharge_attempts.c.account_id)
            .where(accounts.c.org_id == org_id, recharge_attempts.c.id.in_(list(attempt_ids))))
        return [_attempt(row) for row in rows]

    async def pending(self, account_id: int, *, for_update: bool = False) -> RechargeAttempt | None:
        query = select(recharge_attempts).where(
            recharge_attempts.c.account_id == account_id, recharge_attempts.c.status == AttemptStatus.PENDING)
        return await self._one(query.with_for_update() if for_update else query)

    async def pending_for_accounts(self, account_ids: Collection[int]) -> list[RechargeAttempt]:
        if len(account_ids) == 1:
            [account_id] = account_ids
            rows = await self._connection.point_read(_PENDING_ATTEMPT, {"account_id": account_id})
        else:
            rows = (await self._connection.execute(_PENDING_ATTEMPTS, {"account_ids": list(account_ids)})).all()
        return [_attempt(row) for row in rows]

    async def triggered_by(self, entry_id: int) -> RechargeAttempt | None:
        return await self._one(
            select(recharge_attempts).where(recharge_attempts.c.triggered_by_entry_id == entry_id))

    async def triggered_by_many(self, entry_ids: Collection[int]) -> list[RechargeAttempt]:
        if not entry_ids:
            return []
        rows = await self._connection.execute(
            select(recharge_attempts).where(recharge_attempts.c.triggered_by_entry_id.in_(list(entry_ids))))
        return [_attempt(row) for row in rows]

    async def next_due(self, now: datetime) -> RechargeAttempt | None:
        lease = recharge_attempts.c.lease_expires_at
        query = (select(recharge_attempts)
                 .where(recharge_attempts.c.status == AttemptStatus.PENDING,
                        # due at once (domain.recharge.make_due) whatever the clock of the host that created it
                        (recharge_attempts.c.not_before <= now)
                        | (recharge_attempts.c.not_before <= recharge_attempts.c.created_at),
                        (lease.is_(None)) | (lease < now))
                 .order_by(recharge_attempts.c.not_before, recharge_attempts.c.id)
                 .limit(1)
                 .with_for_update(skip_locked=True))
        return await self._one(query)

    async def page(self, account_id: int, before_id: int | None, limit: int) -> list[RechargeAttempt]:
        query = select(recharge_attempts).where(recharge_attempts.c.account_id == account_id)
        if before_id is not None:
            query = query.where(recharge_attempts.c.id < before_id)
        rows = await self._connection.execute(query.order_by(recharge_attempts.c.id.desc()).limit(limit))
        return [_attempt(row) for row in rows]

    async def count(self, account_id: int) -> int:
        return await _count(self._connection, select(func.count()).where(
            recharge_attempts.c.account_id == account_id))

    async def cancelled_since(self, since: datetime, after_id: int | None, limit: int) -> list[RechargeAttempt]:
        rows = await self._connection.execute(_cancelled_since(recharge_attempts, CANCELLED_ATTEMPT, since, after_id,
                                                               limit))
        return [_attempt(row) for row in rows]

    async def _one(self, query: Select[Any]) -> RechargeAttempt | None:
        row = (await self._connection.execute(query)).first()
        return _attempt(row) if row is not None else None


class SqlOrganizationRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def add(self, name: str, at: datetime) -> Organization:
        org_id = (await self._connection.execute(insert(organizations).values(name=name, created_at=at)
                                              .returning(organizations.c.id))).scalar_one()
        return Organization(id=org_id, name=name, created_at=at)

    async def get(self, org_id: int) -> Organization | None:
        row = (await self._connection.execute(select(organizations).where(organizations.c.id == org_id))).first()
        return Organization(id=row.id, name=row.name, created_at=row.created_at) if row is not None else None

    async def count(self) -> int:
        return await _count(self._connection, select(func.count()).select_from(organizations))


class SqlApiKeyRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def add(self, org_id: int, role: Role, key_hash: str, prefix: str, at: datetime,
                  expires_at: datetime | None = None) -> ApiKey:
        key_id = (await self._connection.execute(insert(api_keys).values(
            org_id=org_id, role=role, key_hash=key_hash, prefix=prefix, created_at=at, expires_at=expires_at,
        ).returning(api_keys.c.id))).scalar_one()
        return ApiKey(id=key_id, org_id=org_id, role=role, prefix=prefix, created_at=at, last_used_at=None,
                      revoked_at=None, expires_at=expires_at, key_hash=key_hash)

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._connection.point_read_one(_KEY_BY_HASH, {"key_hash": key_hash})
        return _api_key(row) if row is not None else None

    async def by_hash_with_account(self, key_hash: str, account_id: int) -> tuple[ApiKey, Account | None] | None:
        row = await self._connection.point_read_one(_KEY_AND_ACCOUNT, {"key_hash": key_hash,
                                                                       "account_id": account_id})
        return _key_and_account(row) if row is not None else None

    async def by_hashes_with_accounts(self, reads: Collection[tuple[str, int | None]]
                                      ) -> dict[tuple[str, int | None], tuple[ApiKey, Account | None]]:
        if self._connection.dialect.name != "postgresql":  # SQLite reads each on the loop's thread: no trip to save
            found = {(key_hash, account_id): await self._connection.point_read_one(
                _KEY_AND_ACCOUNT, {"key_hash": key_hash, "account_id": account_id}) for key_hash, account_id in reads}
            return {read: _key_and_account(row) for read, row in found.items() if row is not None}
        pairs = list(reads)
        rows = await self._connection.point_read(_KEYS_AND_ACCOUNTS, {
            "key_hashes": [key_hash for key_hash, _ in pairs], "account_ids": [account_id for _, account_id in pairs]})
        return {(row.given_key_hash, row.given_account_id): _key_and_account(row) for row in rows}

    async def list(self, org_id: int) -> Sequence[ApiKey]:
        rows = await self._connection.execute(
            select(api_keys).where(api_keys.c.org_id == org_id).order_by(api_keys.c.id))
        return [_api_key(row) for row in rows]

    async def revoke(self, key_id: int, at: datetime) -> bool:
        result = await self._connection.execute(update(api_keys).where(
            api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at))
        return bool(result.rowcount)

    async def touch(self, key_id: int, at: datetime) -> None:
        await _update_unread(self._connection, api_keys, key_id, {"last_used_at": at})



class SqlFundsChargeRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def add(self, charge: FundsCharge) -> FundsCharge:
        charge.id = await _insert_returning_id(self._connection, funds_charges, _fields(charge, _FUNDS_CHARGE_FIELDS))
        return charge

    async def save(self, charge: FundsCharge) -> None:
        await _update_unread(self._connection, funds_charges, charge.id, _fields(charge, _FUNDS_CHARGE_FIELDS))

    async def get(self, charge_id: int, *, for_update: bool = False) -> FundsCharge | None:
        query = select(funds_charges).where(funds_charges.c.id == charge_id)
        return await self._one(query.with_for_update() if for_update else query)

    async def by_key(self, account_id: int, idempotency_key: str, status: FundsChargeStatus) -> FundsCharge | None:
        return await self._one(select(funds_charges).where(
            funds_charges.c.account_id == account_id, funds_charges.c.idempotency_key == idempotency_key,
            funds_charges.c.status == status))

    async def pending_micros(self, account_id: int) -> int:
        pending = funds_charges.c
        return await _count(self._connection, select(func.coalesce(func.sum(pending.amount_micros), 0)).where(
            pending.account_id == account_id, pending.status == FundsChargeStatus.PENDING))

    async def count_by_key(self, account_id: int, idempotency_key: str) -> int:
        return await _count(self._connection, select(func.count()).where(
            funds_charges.c.account_id == account_id, funds_charges.c.idempotency_key == idempotency_key))

    async def next_stale(self, created_before: datetime, now: datetime) -> FundsCharge | None:
        lease = funds_charges.c.lease_expires_at
        return await self._one(
            select(funds_charges)
            .where(funds_charges.c.status == FundsChargeStatus.PENDING, funds_charges.c.created_at <= created_before,
                   (lease.is_(None)) | (lease < now))
            .order_by(funds_charges.c.created_at, funds_charges.c.id)
            .limit(1)
            .with_for_update(skip_locked=True))

    async def cancelled_since(self, since: datetime, after_id: int | None, limit: int) -> list[FundsCharge]:
        rows = await self._connection.execute(_cancelled_since(funds_charges, CANCELLED_FUNDS_CHARGE, since, after_id,
                                                               limit))
        return [_funds_charge(row) for row in rows]

    async def _one(self, query: Select[Any]) -> FundsCharge | None:
        row = (await self._connection.execute(query)).first()
        return _funds_charge(row) if row is not None else None


def _cancelled_since(table: Table, cancelled: str, since: datetime, after_id: int | None,
                     limit: int) -> Select[Any]:
    """A page of the rows cancelled at or after `since`, by id: the predicate is written as the partial index's."""
    query = select(table).where(text(cancelled), table.c.settled_at >= since)
    if after_id is not None:
        query = query.where(table.c.id > after_id)
    return query.order_by(table.c.id).limit(limit)


class SqlAuditEventRepository:
    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    async def append(self, event: AuditEvent) -> AuditEvent:
        [(event_id,)] = await self._connection.write_returning(_APPEND_AUDIT_EVENT, _audit_values(event))
        return replace(event, id=event_id)

    async def record(self, event: AuditEvent) -> None:
        await self._connection.write(_RECORD_AUDIT_EVENT, _audit_values(event))

    async def record_many(self, events: Sequence[AuditEvent]) -> None:
        if events:
            await self._connection.write_many(_RECORD_AUDIT_EVENT, [_audit_values(event) for event in events])

    async def get(self, org_id: int, event_id: int) -> AuditEvent | None:
        row = (await self._connection.execute(select(audit_events).where(
            audit_events.c.org_id == org_id, audit_events.c.id == event_id))).first()
        return _audit_event(row) if row is not None else None

    async def page(self, org_id: int, before_id: int | None, limit: int) -> list[AuditEvent]:
        query = select(audit_events).where(audit_events.c.org_id == org_id)
        if before_id is not None:
            query = query.where(audit_events.c.id < before_id)
        rows = await self._connection.execute(query.order_by(audit_events.c.id.desc()).limit(limit))
        return [_audit_event(row) for row in rows]

    async def count(self, org_id: int) -> int:
        return await _count(self._connection, select(func.count()).where(audit_events.c.org_id == org_id))


async def _count(connection: StoreConnection, query: Select[Any]) -> int:
    return int((await connection.execute(query)).scalar_one())


def _entries_of(query: Select[Any], account_id: int, kinds: Collection[EntryKind] | None) -> Select[Any]:
    query = query.where(ledger_entries.c.account_id == account_id)
    if kinds:
        query = query.where(ledger_entries.c.kind.in_([str(kind) for kind in kinds]))
    return query


def _account_values(account: Account) -> dict[str, Any]:
    settings, method = account.recharge, account.payment_method
    return {
        "name": account.name,
        "status": account.status,
        "balance_micros": account.balance_micros,
        "recharge_status": settings.status,
        "recharge_amount_micros": settings.amount_micros,
        "recharge_trigger_micros": settings.trigger_micros,
        "recharge_updated_at": settings.updated_at,
        "recharge_failures": settings.consecutive_failures,
        "payment_token": method.token if method else None,
        "payment_brand": method.brand if method else None,
        "payment_last4": method.last4 if method else None,
        "payment_updated_at": method.updated_at if method else None,
        **{column: account.entry_counts[kind] for kind, column in _ENTRY_COUNT_COLUMNS.items()},
    }


_ENTRY_COUNT_COLUMNS = {EntryKind.FUNDS_ADDED: "funds_added_entries",
                        EntryKind.AUTO_RECHARGE: "auto_recharge_entries", EntryKind.USAGE: "usage_entries"}


def _account(row: Row[Any]) -> Account:
    method = None
    if row.payment_token is not None:
        method = PaymentMethod(row.payment_token, row.payment_brand, row.payment_last4, row.payment_updated_at)
    return Account(
        id=row.id, org_id=row.org_id, name=row.name, currency=row.currency, status=AccountStatus(row.status),
        balance_micros=row.balance_micros, created_at=row.created_at, payment_method=method,
        recharge=RechargeSettings(
            status=RechargeStatus(row.recharge_status), amount_micros=row.recharge_amount_micros,
            trigger_micros=row.recharge_trigger_micros, updated_at=row.recharge_updated_at,
            consecutive_failures=row.recharge_failures,
        ),
        entry_counts={kind: getattr(row, column) for kind, column in _ENTRY_COUNT_COLUMNS.items()},
    )


def _fields(source: object, names: Sequence[str]) -> dict[str, Any]:
    """The named attributes of a domain object or a row, by name."""
    return {name: getattr(source, name) for name in names}


async def _insert_returning_id(connection: StoreConnection, table: Table, values: dict[str, Any]) -> int:
    return int((await connection.execute(insert(table).values(values).returning(table.c.id))).scalar_one())


async def _update_unread(connection: StoreConnection, table: Table, row_id: int | None,
                         values: dict[str, Any]) -> None:
    """Updates the row; nobody reads the row count, so on SQLite it travels with the next statement."""
    await connection.execute(update(table).where(table.c.id == row_id).values(values), execution_options=_UNREAD)


_ENTRY_FIELDS = ("account_id", "kind", "amount_micros", "balance_after_micros", "currency", "service", "minutes",
                 "reference", "occurred_at", "created_at", "idempotency_key", "request_hash")
# PostgreSQL: a batch's entries as one array per column, in one statement text for any number of entries.
_GIVEN_ENTRIES = _given(*((f"each_{name}", name, ledger_entries.c[name].type) for name in _ENTRY_FIELDS),
                        with_ordinality="position")
_GIVEN_ENTRIES_IN_ORDER = select(*(_GIVEN_ENTRIES.c[name] for name in _ENTRY_FIELDS)).order_by(
    _GIVEN_ENTRIES.c.position)
_APPEND_ENTRIES_POSTGRESQL = insert(ledger_entries).from_select(_ENTRY_FIELDS, _GIVEN_ENTRIES_IN_ORDER).returning(
    ledger_entries.c.id)
_APPEND_ENTRIES_UNLESS_KEYS_USED_POSTGRESQL = postgresql.insert(ledger_entries).from_select(
    _ENTRY_FIELDS, _GIVEN_ENTRIES_IN_ORDER).on_conflict_do_nothing(
    index_elements=[ledger_entries.c.account_id, ledger_entries.c.idempotency_key]).returning(ledger_entries.c.id)


def _entry(row: Row[Any]) -> LedgerEntry:
    values = _fields(row, _ENTRY_FIELDS)
    values["kind"] = EntryKind(row.kind)
    values["service"] = CreditService(row.service) if row.service is not None else None
    return LedgerEntry(id=row.id, **values)


_ATTEMPT_FIELDS = ("account_id", "status", "amount_micros", "currency", "failure_reason", "created_at",
                   "not_before", "lease_expires_at", "settled_at", "transaction_id", "triggered_by_entry_id",
                   "claimed_with")


def _attempt(row: Row[Any]) -> RechargeAttempt:
    values = _fields(row, _ATTEMPT_FIELDS)
    values["status"] = AttemptStatus(row.status)
    return RechargeAttempt(id=row.id, **values)


_FUNDS_CHARGE_FIELDS = ("account_id", "idempotency_key", "request_hash", "amount_micros", "currency", "payment_token",
                        "gateway_key", "status", "failure_reason", "created_at", "lease_expires_at", "settled_at",
                        "transaction_id", "api_key_id")


def _funds_charge(row: Row[Any]) -> FundsCharge:
    values = _fields(row, _FUNDS_CHARGE_FIELDS)
    values["status"] = FundsChargeStatus(row.status)
    return FundsCharge(id=row.id, **values)


def _key_and_account(row: Row[Any]) -> tuple[ApiKey, Account | None]:
    """A row of a key with its account's columns after them, all NULL when there is no such account."""
    account: Any = _ACCOUNT_ROW._make(row[_KEY_COLUMNS:_KEY_COLUMNS + len(_ACCOUNT_ROW._fields)])
    return _api_key(row), _account(account) if account.id is not None else None


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(id=row.id, org_id=row.org_id, role=Role(row.role), prefix=row.prefix,
                  created_at=row.created_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at,
                  expires_at=row.expires_at, key_hash=row.key_hash)


def _audit_values(event: AuditEvent) -> dict[str, Any]:
    return dict(org_id=event.org_id, api_key_id=event.api_key_id, operation=event.operation,
                account_id=event.account_id, input_summary=json.dumps(dict(event.input_summary)),
                outcome=event.outcome, error_codes=",".join(event.error_codes), occurred_at=event.occurred_at)


def _audit_event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(id=row.id, org_id=row.org_id, api_key_id=row.api_key_id, operation=row.operation,
                      account_id=row.account_id, input_summary=json.loads(row.input_summary),
                      outcome=AuditOutcome(row.outcome),
                      error_codes=tuple(row.error_codes.split(",")) if row.error_codes else (),
                      occurred_at=row.occurred_at)
