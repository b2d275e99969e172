"""API key lifecycle: expiry and revocation hold at once on every instance; the CLI creates keys with
an expiry, lists it, and revokes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from credits_graphql import cli
from credits_graphql.domain.access import Role
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from tests.conftest import Clock, GraphQLClient, Org
from tests.e2e.conftest import any_database_url, cli_env, migrated, postgres_url, run_cli, sqlite_url
from tests.security.conftest import Instance, key_id

__all__ = ["any_database_url", "postgres_url", "sqlite_url"]  # fixtures used here

ACCOUNTS = "{ accounts(first: 1) { totalCount } }"


async def test_a_revoked_key_is_refused_at_once_by_every_instance(instance: Instance, deps: Deps, org: Org) -> None:
    first, second = await instance(), await instance()
    for api in (first, second):
        assert (await api.post(ACCOUNTS, key=org.reader)).status_code == 200
    assert await access.revoke_api_key(deps, await key_id(deps, org.id, Role.READER))
    for api in (first, second):
        response = await api.post(ACCOUNTS, key=org.reader)
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await second.post(ACCOUNTS, key=org.admin)).status_code == 200


async def test_a_key_stops_working_at_its_expiry(gql: GraphQLClient, deps: Deps, org: Org, clock: Clock) -> None:
    _, secret = await access.create_api_key(deps, org.id, Role.READER, expires_at=clock() + timedelta(hours=1))
    clock.advance(minutes=59, seconds=59)
    assert (await gql.post(ACCOUNTS, key=secret)).status_code == 200
    clock.advance(seconds=1)
    response = await gql.post(ACCOUNTS, key=secret)
    assert response.status_code == 401
    assert "expired" in response.json()["errors"][0]["message"]
    assert (await gql.post(ACCOUNTS, key=org.admin)).status_code == 200


async def test_a_key_cannot_be_created_already_expired(deps: Deps, org: Org, clock: Clock) -> None:
    with pytest.raises(access.InvalidExpiry):
        await access.create_api_key(deps, org.id, Role.ADMIN, expires_at=clock())


async def test_a_key_that_differs_from_a_live_one_in_one_character_is_refused(gql: GraphQLClient, org: Org) -> None:
    forged = org.admin[:-1] + ("A" if org.admin[-1] != "A" else "B")
    assert (await gql.post(ACCOUNTS, key=forged)).status_code == 401


@pytest.mark.slow
def test_the_cli_creates_a_key_with_an_expiry_lists_it_and_revokes_it(tmp_path: Path, any_database_url: str) -> None:
    env = cli_env(migrated(any_database_url, tmp_path))
    org = run_cli("create-org", "Acme", env=env, cwd=tmp_path).last_line
    created = run_cli("create-api-key", "--org", org, "--role", "READER", "--expires-in", "30d", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "valid until" in created.stdout
    assert created.last_line.startswith("cgk_")
    fixed = run_cli("create-api-key", "--org", org, "--role", "ADMIN", "--expires-at", "2099-01-31T00:00:00Z",
                    env=env, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr

    listed = run_cli("list-api-keys", "--org", org, env=env, cwd=tmp_path).stdout.splitlines()
    assert listed[0].split() == ["ID", "ROLE", "PREFIX", "CREATED", "LAST", "USED", "REVOKED", "EXPIRES", "STATUS"]
    reader, admin = listed[1].split(), listed[2].split()
    assert reader[:3] == ["1", "READER", created.last_line[:10]]
    assert reader[4:6] == ["-", "-"]
    assert reader[6] > reader[3]  # expires after it was created
    assert reader[7] == "live"
    assert admin[6:] == ["2099-01-31T00:00:00+00:00", "live"]

    assert run_cli("revoke-api-key", "1", env=env, cwd=tmp_path).returncode == 0
    assert run_cli("list-api-keys", "--org", org, env=env, cwd=tmp_path).stdout.splitlines()[1].split()[-1] == "revoked"
    again = run_cli("revoke-api-key", "1", env=env, cwd=tmp_path)
    assert again.returncode != 0
    assert "no live API key" in again.stderr


def test_the_cli_refuses_an_expiry_it_cannot_honour(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CREDITS_DATABASE_URL", migrated(sqlite_url, tmp_path))
    cli.main(["create-org", "Acme"])
    for expiry in (["--expires-in", "0d"], ["--expires-in", "soon"], ["--expires-at", "2030-01-01T00:00:00"],
                   ["--expires-at", "2001-01-01T00:00:00Z"],
                   ["--expires-in", "1d", "--expires-at", "2099-01-01T00:00:00Z"]):
        with pytest.raises(SystemExit) as exit_status:
            cli.main(["create-api-key", "--org", "1", "--role", "ADMIN", *expiry])
        assert exit_status.value.code == 2, expiry
        assert "cgk_" not in capsys.readouterr().out
    cli.main(["list-api-keys", "--org", "1"])
    assert capsys.readouterr().out.splitlines()[1:] == []
