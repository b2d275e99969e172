"""GraphQL over HTTP: GET for queries only, GraphiQL for browsers, and the health probes."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest
from starlette.types import Message

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
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


@pytest.mark.parametrize("mutation_first", [True, False])
async def test_a_get_of_several_operations_needs_an_operation_name_like_a_post(
        gql: GraphQLClient, http: httpx.AsyncClient, org: Org, mutation_first: bool) -> None:
    operations = ['mutation Open { createAccount(input: {name: "X", currencyCode: "SEK"}) { account { id } } }',
                  "query Count { accounts { totalCount } }"]
    document = " ".join(operations if mutation_first else operations[::-1])
    headers = {"Authorization": f"Bearer {org.admin}", "Accept": "application/json"}
    posted = await gql.post(document)
    unnamed = await http.get("/graphql", params={"query": document}, headers=headers)
    assert (unnamed.status_code, unnamed.json()) == (posted.status_code, posted.json()) == (200, {
        "data": None, "errors": [{"message": "The document holds several operations: send operationName to choose "
                                             "one.", "extensions": {"code": "BAD_REQUEST"}}]})
    strict = await http.get("/graphql", params={"query": document},
                            headers={**headers, "Accept": "application/graphql-response+json"})
    assert strict.status_code == 400
    assert strict.json() == {"errors": posted.json()["errors"]}
    named = await http.get("/graphql", params={"query": document, "operationName": "Count"}, headers=headers)
    assert named.json() == {"data": {"accounts": {"totalCount": 0}}}
    mutation = await http.get("/graphql", params={"query": document, "operationName": "Open"}, headers=headers)
    assert mutation.status_code == 405
    assert (await gql("{ accounts { totalCount } }"))["accounts"]["totalCount"] == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_not_allowed_whoever_asks(http: httpx.AsyncClient, org: Org, method: str) -> None:
    for headers in ({}, {"Authorization": f"Bearer {org.admin}"}):
        response = await http.request(method, "/graphql", headers=headers, json={"query": "{ __typename }"})
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "GET, POST"
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["METHOD_NOT_ALLOWED"]


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


async def test_readyz_answers_503_while_the_sqlite_file_is_deleted_or_replaced_under_the_service(
        http: httpx.AsyncClient, database_url: str) -> None:
    """Processes go on writing to the file they opened (a deleted file's writes are lost), or pair a restored copy
    with the old file's WAL (a malformed database): the load balancer must stop sending them requests."""
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite file")
    path = database_url.removeprefix("sqlite+aiosqlite:///")
    aside = f"{path}.aside"
    os.rename(path, aside)
    try:
        gone = await http.get("/readyz")
        assert gone.status_code == 503
        assert gone.json()["database"] == "file moved"
        assert "was deleted while the service ran" in gone.json()["detail"]
        shutil.copyfile(aside, path)  # a backup restored under the running service
        replaced = await http.get("/readyz")
        assert replaced.status_code == 503
        assert "was replaced while the service ran" in replaced.json()["detail"]
        os.unlink(path)
    finally:
        os.rename(aside, path)
    assert (await http.get("/readyz")).status_code == 200


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


async def test_a_client_that_leaves_before_its_body_is_read_is_not_answered_and_raises_nothing(
        runtime: Runtime, org: Org) -> None:
    app = build_app(runtime, run_worker=False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100"),
               (b"authorization", f"Bearer {org.admin}".encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)  # uvicorn logs a traceback for anything raised here
    assert sent == []
