"""API keys read together (service/key_reads.py): the keys of requests that arrive while a key read is in flight
are read in one statement, and each request still gets its own key and account, read after it arrived."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from credits_graphql.domain.access import Principal, Role
from credits_graphql.domain.ledger import Account
from credits_graphql.service import access, key_reads
from credits_graphql.service.deps import Deps
from credits_graphql.service.key_reads import KeyReads
from credits_graphql.service.transient import StoreUnavailable
from tests.conftest import Org, make_org
from tests.crash.conftest import wait_for
from tests.service.support import open_account

Answer = tuple[Principal | None, Account | None]


class HeldRead:
    """The next lone key read (the one that goes at once) is held once it has read, until `release()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read = asyncio.Event()
        self._go = asyncio.Event()
        read_key = key_reads.read_key

        async def held(*args: Any) -> Any:
            found = await read_key(*args)
            self.read.set()
            await self._go.wait()
            return found

        monkeypatch.setattr(key_reads, "read_key", held)

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def shared_reads(monkeypatch: pytest.MonkeyPatch) -> list[set[tuple[str, int | None]]]:
    """The reads of each statement that read keys together."""
    reads: list[set[tuple[str, int | None]]] = []
    read_keys = key_reads.read_keys

    async def counted(deps: Deps, wanted: set[tuple[str, int | None]]) -> Any:
        reads.append(set(wanted))
        return await read_keys(deps, wanted)

    monkeypatch.setattr(key_reads, "read_keys", counted)
    return reads


async def behind_a_held_read(combiner: KeyReads, monkeypatch: pytest.MonkeyPatch, first_secret: str,
                             requests: list[tuple[str, int | None]],
                             meanwhile: Callable[[], Awaitable[object]] | None = None,
                             cancel: int | None = None) -> tuple[Answer, list[Answer | BaseException]]:
    """A first request with `first_secret`, whose key read is held once it has read; `meanwhile` then runs, and
    the `requests` (key and account id) are sent, queued behind it; the one at index `cancel` is cancelled."""
    held = HeldRead(monkeypatch)
    deps = combiner.deps
    first = asyncio.create_task(access.authenticate_reading(deps, first_secret, None, combiner))
    await held.read.wait()
    if meanwhile is not None:
        await meanwhile()
    queued = [asyncio.create_task(access.authenticate_reading(deps, secret, account_id, combiner))
              for secret, account_id in requests]
    await wait_for(lambda: len(combiner._waiting) == len(requests), "the requests queued behind the held read", 10)
    if cancel is not None:
        queued[cancel].cancel()
    held.release()
    return await first, list(await asyncio.gather(*queued, return_exceptions=True))


def role(answer: Answer | BaseException) -> Role | None:
    return answer[0].role if isinstance(answer, tuple) and answer[0] is not None else None


async def test_keys_read_while_one_is_in_flight_are_read_together_each_with_its_own_answer(
        deps: Deps, org: Org, monkeypatch: pytest.MonkeyPatch, shared_reads: list[set[Any]]) -> None:
    other = await make_org(deps, "Other")
    account = await open_account(deps, org.id)

    first, answers = await behind_a_held_read(KeyReads(deps), monkeypatch, "cgk_unknown-first", [
        (org.admin, account.id),
        (org.reader, None),
        (other.admin, account.id),  # an account of another organization: not read with its key
        ("cgk_no-such-key", account.id),
        (org.admin, account.id),  # the same read twice
    ])

    assert first == (None, None)
    assert [(p.org_id, p.role) if p else None for p, _ in answers] == [
        (org.id, Role.ADMIN), (org.id, Role.READER), (other.id, Role.ADMIN), None, (org.id, Role.ADMIN)]
    assert [a.id if a else None for _, a in answers] == [account.id, None, None, None, account.id]
    assert len(shared_reads) == 1  # one statement for the five, which asked for four different reads
    assert len(shared_reads[0]) == 4


async def test_a_key_revoked_while_a_read_is_in_flight_is_refused_to_the_requests_that_come_after(
        deps: Deps, org: Org, monkeypatch: pytest.MonkeyPatch, shared_reads: list[set[Any]]) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.ADMIN)

    async def revoke() -> None:
        assert await access.revoke_api_key(deps, key.id)

    first, [after] = await behind_a_held_read(KeyReads(deps), monkeypatch, secret, [(secret, None)], revoke)

    assert role(first) is Role.ADMIN  # it arrived, and was read, before the revocation
    assert after == (None, None)  # it arrived after: read after, and refused
    assert len(shared_reads) == 1


async def test_a_failed_shared_read_fails_each_waiting_request_with_an_error_of_its_own(
        deps: Deps, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    failure = StoreUnavailable("database unreachable (OSError)")

    async def unreachable(*_: Any) -> Any:
        raise failure

    monkeypatch.setattr(key_reads, "read_keys", unreachable)
    combiner = KeyReads(deps)
    first, errors = await behind_a_held_read(combiner, monkeypatch, org.admin,
                                             [(org.reader, None), (org.usage_writer, None)])

    assert role(first) is Role.ADMIN  # it went alone, before the database went away
    assert [type(error) for error in errors] == [StoreUnavailable, StoreUnavailable]
    assert errors[0] is not errors[1]
    assert all(error.__cause__ is failure for error in errors if isinstance(error, BaseException))
    monkeypatch.undo()
    assert role(await access.authenticate_reading(deps, org.reader, None, combiner)) is Role.READER  # goes on


async def test_a_waiting_request_that_is_cancelled_leaves_the_others_their_answers(
        deps: Deps, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    first, [gone, stays] = await behind_a_held_read(KeyReads(deps), monkeypatch, org.admin,
                                                    [(org.reader, None), (org.usage_writer, None)], cancel=0)

    assert role(first) is Role.ADMIN
    assert isinstance(gone, asyncio.CancelledError)
    assert role(stays) is Role.USAGE_WRITER
