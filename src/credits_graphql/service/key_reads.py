"""API keys read together: every request reads its key (with the account it reads first), a round trip each on
PostgreSQL, which cost a balance read more CPU than the rest of its database path.

A key read goes at once, alone, when no other is in flight in the process. The reads that arrive while one is in
flight wait for it to end, then go together, in one statement on a connection of their own, as
usage_combiner.py's reports do; nothing waits on a timer. Each read still starts after its request arrived, so it
sees every commit made before (a key revoked before the request came is refused, on every process, at once)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from credits_graphql.domain.ledger import Account
from credits_graphql.service.deps import Deps
from credits_graphql.service.shared_work import answer_each
from credits_graphql.service.unit_of_work import ApiKey

KeyRead = tuple[str, int | None]
"""A key's digest, and the id of an account of its organization to read with it, if any."""
Found = tuple[ApiKey, Account | None] | None


@dataclass(frozen=True, slots=True)
class _Waiting:
    read: KeyRead
    found: asyncio.Future[Found]


@dataclass
class KeyReads:
    """One per process, on the process's `deps` (not a request's). It also remembers the keys whose last use the
    database refused to record lately (service/access.py), so that requests do not each wait for it again."""

    deps: Deps
    _touch_refused: dict[int, datetime] = field(default_factory=dict)
    _reading: bool = False
    _waiting: list[_Waiting] = field(default_factory=list)
    _groups: set[asyncio.Task[None]] = field(default_factory=set)

    async def read(self, deps: Deps, key_hash: str, account_id: int | None) -> Found:
        """The key with that digest and its organization's account `account_id`, for a request whose dependencies
        are `deps` (a read alone uses the request's own read connection, which its later reads share)."""
        if not self._reading:
            self._reading = True
            try:
                return await read_key(deps, key_hash, account_id)
            finally:
                self._next()
        waiting = _Waiting((key_hash, account_id), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        return await waiting.found

    def may_touch(self, key_id: int, now: datetime, interval: timedelta) -> bool:
        """Whether to record the key's use now: not within `interval` of a try the database refused (busy, read-only),
        which left the last use as it was, so that the requests after it do not each wait for the database again."""
        refused = self._touch_refused.get(key_id)
        return refused is None or now - refused > interval

    def touch_refused(self, key_id: int, now: datetime) -> None:
        if len(self._touch_refused) > 10_000:  # keys are few; whatever the count, the memory stays bounded
            self._touch_refused.clear()
        self._touch_refused[key_id] = now

    def _next(self) -> None:
        group, self._waiting = self._waiting, []
        if not group:
            self._reading = False
            return
        task = asyncio.create_task(self._run(group), name="key-reads")
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _run(self, group: list[_Waiting]) -> None:
        async def read() -> list[Found]:
            found = await read_keys(self.deps, {waiting.read for waiting in group})
            return [found.get(waiting.read) for waiting in group]

        try:
            await answer_each([waiting.found for waiting in group], read())
        finally:
            self._next()


async def read_key(deps: Deps, key_hash: str, account_id: int | None) -> Found:
    async with deps.uow() as uow:
        if account_id is None:
            key = await uow.api_keys.by_hash(key_hash)
            return (key, None) if key is not None else None
        return await uow.api_keys.by_hash_with_account(key_hash, account_id)


async def read_keys(deps: Deps, reads: set[KeyRead]) -> dict[KeyRead, tuple[ApiKey, Account | None]]:
    async with deps.uow() as uow:
        return await uow.api_keys.by_hashes_with_accounts(reads)
