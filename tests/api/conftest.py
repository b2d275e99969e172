"""Fixtures of the API tests: an account made through the API, with or without funds; the ledger rule checked
after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from credits_graphql.service.deps import Deps
from tests.api.documents import add_funds, create_account
from tests.conftest import GraphQLClient, Org, make_org
from tests.service.support import assert_every_ledger_consistent


@pytest.fixture
async def account_id(gql: GraphQLClient) -> str:
    """A SEK account with a Visa card and no funds."""
    account = await create_account(gql, "Ops", "SEK", "tok_visa")
    return str(account["id"])


@pytest.fixture
async def funded_id(gql: GraphQLClient, account_id: str) -> str:
    """The SEK account holding 100.00."""
    result = await add_funds(gql, account_id, "100", "seed")
    assert result["userErrors"] == [], result
    return account_id


@pytest.fixture
async def other_org(deps: Deps, org: Org) -> Org:
    """A second organization with its own keys (created after `org`)."""
    return await make_org(deps, "Globex")


@pytest.fixture(autouse=True)
async def ledger_rule_holds_afterwards(deps: Deps) -> AsyncIterator[None]:
    """Every API test ends by checking the ledger rule on every account (tests/service/conftest.py)."""
    yield
    await assert_every_ledger_consistent(deps)
