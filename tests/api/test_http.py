"""GraphQL over HTTP: GET for queries only, GraphiQL for browsers, and the health probes."""

from __future__ import annotations

import json

import httpx

from tests.api.documents import create_account
from tests.conftest import GraphQLClient, Org


async def test_a_query_may_be_sent_with_get(gql: GraphQLClient, http: httpx.AsyncClient, org: Org) -> None:
    await create_account(gql, "Ops", "SEK")
    response = await http.get("/graphql", params={"query": "{accounts{totalCount}}"},
                              headers={"Authorization": f"Bearer {org.admin}", "Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"accounts": {"totalCount": 1}}}


async def test_a_get_query_needs_a_key_too(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", params={"query": "{accounts{totalCount}}"},
                              headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_mutation_sent_with_get_is_method_not_allowed_and_changes_nothing(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org) -> None:
    mutation = 'mutation { createAccount(input: {name: "X", currencyCode: "SEK"}) { account { id } } }'
    response = await http.get("/graphql", params={"query": mutation},
                              headers={"Authorization": f"Bearer {org.admin}", "Accept": "application/json"})
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert "GET" not in response.headers["allow"]
    assert (await gql("{ accounts { totalCount } }"))["accounts"]["totalCount"] == 0


async def test_a_browser_gets_graphiql_without_a_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_health_probes_answer_ok(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    ready = await http.get("/readyz")
    assert (health.status_code, ready.status_code) == (200, 200)
    assert health.json()["status"] == "ok"
    assert ready.json()["status"] == "ok"


async def test_graphql_responses_are_json(gql: GraphQLClient) -> None:
    response = await gql.post("{ accounts { totalCount } }")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


async def test_the_content_type_is_matched_without_regard_to_case(http: httpx.AsyncClient, org: Org) -> None:
    # Media types are case-insensitive (RFC 9110, 8.3.1).
    response = await http.post("/graphql", content=json.dumps({"query": "{ accounts { totalCount } }"}),
                               headers={"Authorization": f"Bearer {org.reader}",
                                        "Content-Type": "Application/JSON; charset=UTF-8"})
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"accounts": {"totalCount": 0}}}
