"""Organizations and API keys: keys authenticate until revoked and are never shown again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

import pytest

from credits_graphql.domain.access import Role
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from credits_graphql.service.key_reads import KeyReads
from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.service.unit_of_work import UnitOfWork
from tests.conftest import Clock, Org, make_org


async def test_a_new_key_authenticates_as_its_organization_and_role(deps: Deps, org: Org) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.USAGE_WRITER)
    principal = await access.authenticate(deps, secret)
    assert principal is not None
    assert (principal.key_id, principal.org_id, principal.role) == (key.id, org.id, Role.USAGE_WRITER)


async def test_the_org_fixture_keys_carry_their_roles(deps: Deps, org: Org) -> None:
    roles = {}
    for secret in (org.admin, org.reader, org.usage_writer):
        principal = await access.authenticate(deps, secret)
        assert principal is not None
        assert principal.org_id == org.id
        roles[secret] = principal.role
    assert roles == {org.admin: Role.ADMIN, org.reader: Role.READER, org.usage_writer: Role.USAGE_WRITER}


async def test_a_revoked_key_no_longer_authenticates(deps: Deps, org: Org) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.ADMIN)
    assert await access.revoke_api_key(deps, key.id) is True
    assert await access.authenticate(deps, secret) is None
    assert await access.revoke_api_key(deps, key.id) is False  # already revoked
    listed = {k.id: k for k in await access.list_api_keys(deps, org.id)}
    assert listed[key.id].revoked_at is not None
    assert await access.authenticate(deps, org.admin) is not None  # other keys are untouched


@pytest.mark.parametrize("secret", ["", "cgk_", "cgk_not-a-real-key", "Bearer x", "cgk_" + "a" * 200])
async def test_unknown_keys_do_not_authenticate(deps: Deps, org: Org, secret: str) -> None:
    assert await access.authenticate(deps, secret) is None


async def test_revoking_an_unknown_key_reports_nothing_revoked(deps: Deps, org: Org) -> None:
    assert await access.revoke_api_key(deps, 999_999) is False


async def test_listed_keys_never_contain_their_secrets(deps: Deps, org: Org) -> None:
    listed = await access.list_api_keys(deps, org.id)
    assert sorted(k.role for k in listed) == sorted(Role)
    dumped = repr(listed)
    for secret in (org.admin, org.reader, org.usage_writer):
        assert secret not in dumped
        assert access.hash_key(secret) not in dumped
    for key in listed:
        assert len(key.prefix) < 20
        assert not hasattr(key, "secret")


async def test_keys_are_listed_per_organization(deps: Deps, org: Org) -> None:
    other = await make_org(deps, "Other")
    mine = {k.id for k in await access.list_api_keys(deps, org.id)}
    theirs = {k.id for k in await access.list_api_keys(deps, other.id)}
    assert len(mine) == len(theirs) == len(Role)
    assert not mine & theirs
    principal = await access.authenticate(deps, other.admin)
    assert principal is not None
    assert principal.org_id == other.id != org.id


async def test_creating_a_key_for_an_unknown_organization_raises(deps: Deps) -> None:
    with pytest.raises(access.UnknownOrganization):
        await access.create_api_key(deps, 999_999, Role.ADMIN)


async def test_authenticating_records_when_a_key_was_last_used(deps: Deps, org: Org, clock: Clock) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.READER)
    assert await access.authenticate(deps, secret) is not None
    [listed] = [k for k in await access.list_api_keys(deps, org.id) if k.id == key.id]
    assert listed.last_used_at is not None
    assert listed.last_used_at.replace(tzinfo=clock.now.tzinfo) == clock.now
    # A later use moves it on: an operator must not revoke a partner's live key as idle
    clock.advance(minutes=5)
    assert await access.authenticate(deps, secret) is not None
    [listed] = [k for k in await access.list_api_keys(deps, org.id) if k.id == key.id]
    assert listed.last_used_at is not None
    assert listed.last_used_at.replace(tzinfo=clock.now.tzinfo) == clock.now


async def test_a_database_that_refuses_the_last_use_serves_the_key_and_is_not_asked_again_for_a_while(
        deps: Deps, org: Org, clock: Clock) -> None:
    """A busy or read-only database refuses the write after a wait (SQLite: its 30 s busy timeout): the requests after
    the first must not each wait for it again, reads included."""
    key, secret = await access.create_api_key(deps, org.id, Role.READER)
    tries: list[bool] = []

    @asynccontextmanager
    async def refusing_writes(write: bool) -> AsyncIterator[UnitOfWork]:
        if write:
            tries.append(write)
            raise StoreUnavailable("database busy (locked)")
        async with deps.uow(write=write) as uow:
            yield uow

    def factory(*, write: bool = False) -> AbstractAsyncContextManager[UnitOfWork]:
        return refusing_writes(write)

    refusing = replace(deps, uow=factory)
    key_reads = KeyReads(refusing)
    for _ in range(3):
        principal, _ = await access.authenticate_reading(refusing, secret, None, key_reads)
        assert principal is not None
        assert principal.key_id == key.id
    assert len(tries) == 1
    clock.advance(minutes=2)  # a minute on: tried again
    assert (await access.authenticate_reading(refusing, secret, None, key_reads))[0] is not None
    assert len(tries) == 2


async def test_organizations_are_counted(deps: Deps, org: Org) -> None:
    assert await access.count_organizations(deps) == 1
    await make_org(deps, "Second")
    assert await access.count_organizations(deps) == 2


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "Acme\x00Corp"], ids=["empty", "blank", "too-long", "nul"])
async def test_a_bad_organization_name_is_refused_and_creates_nothing(deps: Deps, name: str) -> None:
    before = await access.count_organizations(deps)
    with pytest.raises(access.InvalidOrganizationName):
        await access.create_organization(deps, name)
    assert await access.count_organizations(deps) == before


async def test_an_organization_is_stored_with_its_name_stripped(deps: Deps) -> None:
    assert (await access.create_organization(deps, "  " + "x" * 200 + " ")).name == "x" * 200
