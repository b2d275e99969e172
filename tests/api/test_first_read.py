"""A query whose first root field reads an account by id has the account read with the API key, in one statement
(api/prepared_request.py), once its text has been seen: the answers are the same, the key's checks hold at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from credits_graphql.domain.access import Role
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from credits_graphql.store.repositories import SqlAccountRepository, SqlApiKeyRepository
from tests.api.documents import ACCOUNT, ACCOUNTS, BALANCE, NODE, TRANSACTIONS, codes_of, record_usage
from tests.conftest import GraphQLClient, Org

_READS = ((SqlApiKeyRepository, "by_hash"), (SqlApiKeyRepository, "by_hash_with_account"),
          (SqlAccountRepository, "get"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reads of keys and accounts, by repository method."""
    made: list[str] = []

    def counted(name: str, read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            made.append(name)
            return await read(*args, **kwargs)
        return run

    for repository, name in _READS:
        monkeypatch.setattr(repository, name, counted(name, getattr(repository, name)))
    return made


@pytest.mark.parametrize("document", [BALANCE, ACCOUNT, TRANSACTIONS, NODE])
async def test_a_query_seen_before_reads_its_account_with_the_key(gql: GraphQLClient, funded_id: str,
                                                                 reads: list[str], document: str) -> None:
    first = await gql(document, {"id": funded_id})
    assert reads == ["by_hash", "get"]
    reads.clear()
    again = await gql(document, {"id": funded_id})
    assert reads == ["by_hash_with_account"]
    [field] = first.values()
    assert field is not None
    assert _without_as_of(again) == _without_as_of(first)


def _without_as_of(answer: Any) -> Any:
    """(A balance carries the time it was read.)"""
    if isinstance(answer, dict):
        return {name: _without_as_of(value) for name, value in answer.items() if name != "asOf"}
    return answer


async def test_the_account_read_with_the_key_is_the_latest(gql: GraphQLClient, funded_id: str, org: Org,
                                                          reads: list[str]) -> None:
    await gql(BALANCE, {"id": funded_id})
    result = await record_usage(gql.as_key(org.usage_writer), funded_id, "2.50", "call-1")
    assert result["userErrors"] == []
    reads.clear()
    balance = (await gql(BALANCE, {"id": funded_id}))["balance"]
    assert reads == ["by_hash_with_account"]
    assert balance["available"]["amount"] == "97.50"


async def test_a_revoked_key_is_refused_at_once_though_its_query_reads_an_account_with_it(
        gql: GraphQLClient, deps: Deps, org: Org, funded_id: str) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.READER)
    assert (await gql(BALANCE, {"id": funded_id}, key=secret))["balance"] is not None
    assert await access.revoke_api_key(deps, key.id)
    response = await gql.post(BALANCE, {"id": funded_id}, key=secret)
    assert response.status_code == 401
    assert codes_of(response) == ["UNAUTHENTICATED"]


async def test_another_organizations_account_is_not_read_with_the_key(gql: GraphQLClient, funded_id: str,
                                                                     other_org: Org, reads: list[str]) -> None:
    for _ in range(2):
        assert await gql(BALANCE, {"id": funded_id}, key=other_org.admin) == {"balance": None}
        assert await gql(ACCOUNT, {"id": funded_id}, key=other_org.admin) == {"account": None}
    assert "by_hash_with_account" in reads


async def test_a_malformed_id_is_reported_as_before_and_the_key_read_alone(gql: GraphQLClient, funded_id: str,
                                                                         reads: list[str]) -> None:
    await gql(BALANCE, {"id": funded_id})
    reads.clear()
    for malformed in ("not an id", "QWNjb3VudDow", ""):  # ("Account:0")
        response = await gql.post(BALANCE, {"id": malformed})
        assert response.status_code == 200
        assert codes_of(response) == ["BAD_USER_INPUT"]
    assert set(reads) == {"by_hash"}


async def test_a_query_that_does_not_start_with_an_account_reads_the_key_alone(gql: GraphQLClient,
                                                                              funded_id: str,
                                                                              reads: list[str]) -> None:
    for _ in range(2):
        assert (await gql(ACCOUNTS, {"first": 5}))["accounts"]["totalCount"] == 1
    assert reads == ["by_hash", "by_hash"]
