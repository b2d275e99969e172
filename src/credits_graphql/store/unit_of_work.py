"""One database transaction with the repositories bound to it."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from credits_graphql.service.unit_of_work import (
    AccountRepository,
    ApiKeyRepository,
    LedgerRepository,
    OrganizationRepository,
    RechargeAttemptRepository,
)
from credits_graphql.store.engine import WRITE_OPTION
from credits_graphql.store.repositories import (
    SqlAccountRepository,
    SqlApiKeyRepository,
    SqlLedgerRepository,
    SqlOrganizationRepository,
    SqlRechargeAttemptRepository,
)


class SqlUnitOfWork:
    session: AsyncSession
    accounts: AccountRepository
    ledger: LedgerRepository
    attempts: RechargeAttemptRepository
    organizations: OrganizationRepository
    api_keys: ApiKeyRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, write: bool) -> None:
        self._sessions = sessions
        self._write = write

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        if self._write:
            await self.session.connection(execution_options={WRITE_OPTION: True})
        self.accounts = SqlAccountRepository(self.session)
        self.ledger = SqlLedgerRepository(self.session)
        self.attempts = SqlRechargeAttemptRepository(self.session)
        self.organizations = SqlOrganizationRepository(self.session)
        self.api_keys = SqlApiKeyRepository(self.session)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.session.rollback()  # after commit() this is a no-op
        await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()


class SqlUnitOfWorkFactory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._sessions, write=write)
