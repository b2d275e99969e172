"""A query text seen before runs without Strawberry's extension machinery (api/prepared.py). Each request here is
answered by two apps over the same database: one that never remembers a document, so every request goes
Strawberry's full way through the extensions, and one that has seen the text, so the request goes the prepared
way. The answers must be the same: status, content type and body (but for a masked error's requestId). A small
JSON POST of a text seen before also skips Strawberry's request handling (api/prepared_request.py): the short
way, checked here the same way."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from graphql import parse
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import _get_validate_cache

from credits_graphql.api import limits
from credits_graphql.api import queries as api_queries
from credits_graphql.api.http import GraphQLEndpoint
from credits_graphql.api.prepared import MAX_DOCUMENTS, ValidatedDocuments
from credits_graphql.api.schema import CreditsSchema
from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.service.transient import StoreUnavailable
from tests.api.documents import RECORD_USAGE, codes_of, history
from tests.conftest import GraphQLClient, Org

READ = "query($id: ID!) { balance(accountId: $id) { account { id name } available { amount currencyCode } } }"
NESTED = """query($n: Int, $m: Int) { accounts(first: $n) { edges { node { id
  transactions(first: $m) { edges { node { id amount { amount } } } } } } } }"""
TWO_OPERATIONS = """query Names { accounts(first: 5) { edges { node { name } } } }
query Count { accounts { totalCount } }"""
USAGE_AND_FUNDS = """mutation($usage: RecordUsageInput!, $funds: AddFundsInput!) {
  recordUsage(input: $usage) { transaction { id amount { amount } } userErrors { code } }
  addFunds(input: $funds) { transaction { id amount { amount } } userErrors { code } } }"""


def schema_of(app: Starlette) -> CreditsSchema:
    endpoint = next(route.endpoint for route in app.routes if isinstance(route, Route) and route.path == "/graphql")
    assert isinstance(endpoint, GraphQLEndpoint)
    assert isinstance(endpoint.schema, CreditsSchema)
    return endpoint.schema


@dataclass
class Ways:
    full: httpx.AsyncClient
    prepared: httpx.AsyncClient
    prepared_schema: CreditsSchema
    prepared_runs: list[CreditsSchema]
    """The schemas whose prepared way ran, once per request."""
    strawberry_runs: list[GraphQLEndpoint]
    """The endpoints whose request went through Strawberry's request handling, once per request."""
    went_short: bool = False
    """Whether the last request to the prepared app skipped Strawberry's request handling."""

    async def answers(self, body: dict[str, Any], key: str, *, warm: dict[str, Any] | None = None,
                      method: str = "POST", headers: dict[str, str] | None = None,
                      ) -> tuple[httpx.Response, httpx.Response, bool]:
        """The full way's answer, the prepared way's, and whether the prepared way ran. `warm`: variables of a
        request of the same text that must succeed first on the prepared app, so that it remembers the text."""
        if warm is not None:
            warmed = await self.prepared.post("/graphql", json={**body, "variables": warm},
                                              headers={"Authorization": f"Bearer {key}"})
            assert warmed.status_code == 200, warmed.text
            assert "errors" not in warmed.json(), warmed.text
            assert self.prepared_schema.documents.get(body["query"]) is not None
        headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        runs = len(self.prepared_runs)
        full = await _send(self.full, method, body, headers)
        strawberry_runs = len(self.strawberry_runs)
        prepared = await _send(self.prepared, method, body, headers)
        self.went_short = len(self.strawberry_runs) == strawberry_runs
        assert all(schema is self.prepared_schema for schema in self.prepared_runs)
        return full, prepared, len(self.prepared_runs) > runs


async def _send(client: httpx.AsyncClient, method: str, body: dict[str, Any],
                headers: dict[str, str]) -> httpx.Response:
    if method == "GET":
        params = {name: value if isinstance(value, str) else json.dumps(value)
                  for name, value in body.items()}
        return await client.get("/graphql", params=params, headers=headers)
    return await client.post("/graphql", content=json.dumps(body), headers={"Content-Type": "application/json",
                                                                             **headers})


def assert_same(full: httpx.Response, prepared: httpx.Response, *, but_request_ids: bool = False) -> None:
    assert prepared.status_code == full.status_code, (full.text, prepared.text)
    assert prepared.headers["content-type"] == full.headers["content-type"]
    bodies = full.json(), prepared.json()
    if but_request_ids:
        for body in bodies:
            for error in body["errors"]:
                error["extensions"].pop("requestId", None)
    assert bodies[1] == bodies[0]


@pytest.fixture
async def ways(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Ways]:
    full_app, prepared_app = build_app(runtime, run_worker=False), build_app(runtime, run_worker=False)
    schema_of(full_app).documents = ValidatedDocuments(maxsize=0)
    runs: list[CreditsSchema] = []
    execute_validated = CreditsSchema._execute_validated

    async def counted(self: CreditsSchema, *args: Any) -> Any:
        runs.append(self)
        return await execute_validated(self, *args)

    monkeypatch.setattr(CreditsSchema, "_execute_validated", counted)
    strawberry_runs: list[GraphQLEndpoint] = []
    run = GraphQLEndpoint.run

    async def counted_run(self: GraphQLEndpoint, *args: Any, **kwargs: Any) -> Any:
        strawberry_runs.append(self)
        return await run(self, *args, **kwargs)

    monkeypatch.setattr(GraphQLEndpoint, "run", counted_run)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=full_app), base_url="http://test") as full,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=prepared_app), base_url="http://test") as prep):
        yield Ways(full, prep, schema_of(prepared_app), runs, strawberry_runs)


def usage(account_id: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"accountId": account_id, "service": "DOMESTIC_CALLING", "amount": "1.25", "idempotencyKey": key,
            **fields}


async def test_a_read_is_answered_the_same_the_prepared_way(ways: Ways, org: Org, funded_id: str) -> None:
    body = {"query": READ, "variables": {"id": funded_id}}
    full, prepared, ran = await ways.answers(body, org.reader, warm={"id": funded_id})
    assert ran
    assert ways.went_short
    assert_same(full, prepared)
    assert prepared.json()["data"]["balance"]["available"] == {"amount": "100.00", "currencyCode": "SEK"}


@pytest.mark.parametrize(("headers", "variables", "short", "status"), [
    ({}, {"id": "not an id"}, True, 200),
    ({"Content-Type": "application/json; charset=utf-8"}, {}, True, 200),
    ({"Content-Type": "Application/JSON"}, {}, True, 200),
    # A request error (a variable missing) is a 400 without data for a client that asks for GraphQL's own type.
    ({"Accept": "application/graphql-response+json"}, {"id": None}, True, 400),
    ({"Accept": "application/graphql-response+json, application/json;q=0.9"}, {}, True, 200),
    ({"Accept": "application/json"}, {"id": None}, True, 200),
    ({"Content-Type": "text/plain"}, {}, False, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, {}, False, 415),
    # The endpoint offers no streaming transport over HTTP: a query is answered as JSON either way.
    ({"Accept": "multipart/mixed"}, {}, True, 200),
    ({"Accept": "text/event-stream"}, {}, True, 200),
])
async def test_headers_are_answered_the_same_the_short_way(ways: Ways, org: Org, funded_id: str,
                                                           headers: dict[str, str], variables: dict[str, Any],
                                                           short: bool, status: int) -> None:
    body = {"query": READ, "variables": {"id": funded_id, **variables}}
    full, prepared, _ = await ways.answers(body, org.reader, warm={"id": funded_id}, headers=headers)
    assert ways.went_short == short
    assert (prepared.status_code, full.status_code) == (status, status), (prepared.text, full.text)
    assert_same(full, prepared)


@pytest.mark.parametrize("body", [
    {"query": READ, "variables": {"id": "x"}, "padding": "x" * 5000},  # over the short way's limit
    {"query": READ, "variables": {"id": "x"}, "extensions": {"anything": 1}},
    {"query": READ, "variables": [1]},
    {"query": READ, "variables": {"id": "x"}, "operationName": 7},
])
async def test_bodies_the_short_way_leaves_to_strawberry(ways: Ways, org: Org, funded_id: str,
                                                         body: dict[str, Any]) -> None:
    await ways.answers({"query": READ}, org.reader, warm={"id": funded_id})
    full, prepared, _ = await ways.answers(body, org.reader)
    assert not ways.went_short
    assert_same(full, prepared)


@pytest.mark.parametrize("key", ["no-such-key", ""])
async def test_a_bad_key_is_refused_the_same_the_short_way(ways: Ways, org: Org, funded_id: str, key: str) -> None:
    body = {"query": READ, "variables": {"id": funded_id}}
    await ways.answers(body, org.reader, warm={"id": funded_id})
    full, prepared, ran = await ways.answers(body, key)
    assert not ran
    assert_same(full, prepared)
    assert prepared.status_code == 401
    assert prepared.headers["www-authenticate"] == full.headers["www-authenticate"] == 'Bearer realm="credits"'
    assert codes_of(prepared) == ["UNAUTHENTICATED"]


async def test_a_text_that_failed_validation_is_never_remembered(ways: Ways, org: Org) -> None:
    body = {"query": "{ accounts { edges { node { nosuchfield } } } }"}
    for _ in range(2):
        full, prepared, ran = await ways.answers(body, org.admin)
        assert not ran
        assert_same(full, prepared)
        assert codes_of(prepared) == ["GRAPHQL_VALIDATION_FAILED"]
    assert ways.prepared_schema.documents.get(body["query"]) is None


async def test_the_cost_limit_is_checked_on_each_request_s_variables(ways: Ways, org: Org, funded_id: str) -> None:
    body = {"query": NESTED, "variables": {"n": 100, "m": 100}}
    full, prepared, ran = await ways.answers(body, org.reader, warm={"n": 1, "m": 1})
    assert ran
    assert_same(full, prepared)
    assert codes_of(prepared) == ["QUERY_COST_EXCEEDED"]


async def test_strings_in_variables_are_checked_on_each_request(ways: Ways, org: Org, funded_id: str) -> None:
    body = {"query": RECORD_USAGE, "variables": {"input": usage(funded_id, "nul", reference="a\x00b")}}
    full, prepared, ran = await ways.answers(body, org.usage_writer, warm={"input": usage(funded_id, "warm")})
    assert ran
    assert_same(full, prepared)
    assert codes_of(prepared) == ["BAD_USER_INPUT"]
    assert [amount for kind, amount in await history(GraphQLClient(ways.full, org.admin), funded_id)
            if kind == "USAGE"] == ["-1.25"]  # the warm-up only


@pytest.mark.parametrize("bad", [{"amount": "1e2"}, {"service": "DOMESTIC_CALLNG"}, {"minutes": "three"}],
                         ids=["exponent", "unknown enum value", "string for an Int"])
async def test_a_variable_that_does_not_coerce(ways: Ways, org: Org, funded_id: str, bad: dict[str, Any]) -> None:
    body = {"query": RECORD_USAGE, "variables": {"input": usage(funded_id, "bad", **bad)}}
    full, prepared, ran = await ways.answers(body, org.usage_writer, warm={"input": usage(funded_id, "warm")})
    assert ran
    assert_same(full, prepared)
    assert codes_of(prepared) == ["BAD_USER_INPUT"]


async def test_a_replayed_usage_report_is_answered_the_same(ways: Ways, org: Org, funded_id: str) -> None:
    body = {"query": RECORD_USAGE, "variables": {"input": usage(funded_id, "once")}}
    full, prepared, ran = await ways.answers(body, org.usage_writer, warm={"input": usage(funded_id, "warm")})
    assert ran
    assert ways.went_short
    assert_same(full, prepared)
    assert prepared.json()["data"]["recordUsage"]["userErrors"] == []
    assert [amount for kind, amount in await history(GraphQLClient(ways.full, org.admin), funded_id)
            if kind == "USAGE"] == ["-1.25", "-1.25"]  # the warm-up and "once", recorded once


async def test_the_preflight_refuses_a_forbidden_field_among_several(ways: Ways, org: Org, funded_id: str) -> None:
    variables = {"usage": usage(funded_id, "u1"), "funds": {"accountId": funded_id, "amount": "5",
                                                            "idempotencyKey": "f1"}}
    await ways.answers({"query": USAGE_AND_FUNDS, "variables": {}}, org.admin, warm=variables)
    body = {"query": USAGE_AND_FUNDS, "variables": {**variables, "usage": usage(funded_id, "u2")}}
    full, prepared, ran = await ways.answers(body, org.usage_writer)
    assert ran
    assert_same(full, prepared)
    assert codes_of(prepared) == ["FORBIDDEN"]
    assert "Nothing in this request was run" in prepared.json()["errors"][0]["message"]


async def test_the_preflight_refuses_a_malformed_id_among_several_fields(ways: Ways, org: Org,
                                                                         funded_id: str) -> None:
    warm = {"usage": usage(funded_id, "u1"), "funds": {"accountId": funded_id, "amount": "5", "idempotencyKey": "f1"}}
    body = {"query": USAGE_AND_FUNDS, "variables": {
        "usage": usage(funded_id, "u2"), "funds": {"accountId": "not-an-id", "amount": "5", "idempotencyKey": "f2"}}}
    full, prepared, ran = await ways.answers(body, org.admin, warm=warm)
    assert ran
    assert_same(full, prepared)
    assert codes_of(prepared) == ["BAD_USER_INPUT"]
    assert [amount for kind, amount in await history(GraphQLClient(ways.full, org.admin), funded_id)
            if kind == "USAGE"] == ["-1.25"]  # the warm-up only: neither refused request ran its first field


async def test_operation_names_choose_as_they_do_the_full_way(ways: Ways, org: Org, funded_id: str) -> None:
    await ways.answers({"query": TWO_OPERATIONS, "operationName": "Names"}, org.reader, warm={})
    full, prepared, ran = await ways.answers({"query": TWO_OPERATIONS, "operationName": "Count"}, org.reader)
    assert ran
    assert_same(full, prepared)
    assert prepared.json()["data"] == {"accounts": {"totalCount": 1}}
    # Without a name, Preflight's error; with an unknown one, Strawberry's 400.
    for refused, status in (({"query": TWO_OPERATIONS}, 200),
                            ({"query": TWO_OPERATIONS, "operationName": "Nope"}, 400)):
        full, prepared, ran = await ways.answers(refused, org.reader)
        assert not ran
        assert_same(full, prepared)
        assert prepared.status_code == status, prepared.text
        assert codes_of(prepared) == ["BAD_REQUEST"]


async def test_get_runs_a_remembered_query_and_refuses_a_remembered_mutation(ways: Ways, org: Org,
                                                                             funded_id: str) -> None:
    full, prepared, ran = await ways.answers({"query": READ, "variables": {"id": funded_id}}, org.reader,
                                             warm={"id": funded_id}, method="GET")
    assert ran
    assert not ways.went_short
    assert_same(full, prepared)
    assert prepared.status_code == 200
    body = {"query": RECORD_USAGE, "variables": {"input": usage(funded_id, "by-get")}}
    full, prepared, ran = await ways.answers(body, org.usage_writer, warm={"input": usage(funded_id, "warm")},
                                             method="GET")
    assert not ran
    assert_same(full, prepared)
    assert prepared.status_code == 405
    assert prepared.headers["allow"] == "POST"


@pytest.mark.parametrize(("failure", "code"), [(RuntimeError("secret details"), "INTERNAL_SERVER_ERROR"),
                                               (StoreUnavailable("down"), "SERVICE_UNAVAILABLE")])
async def test_errors_in_a_resolver_get_the_same_codes(ways: Ways, org: Org, funded_id: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture, failure: Exception,
                                                       code: str) -> None:
    body = {"query": READ, "variables": {"id": funded_id}}
    await ways.answers({"query": READ, "variables": {}}, org.reader, warm={"id": funded_id})

    async def failing(*_: Any) -> Any:
        raise failure

    monkeypatch.setattr(api_queries, "_account", failing)  # (the account itself is read with the key)
    caplog.set_level(logging.ERROR, logger="credits_graphql.errors")
    full, prepared, ran = await ways.answers(body, org.reader)
    assert ran
    assert_same(full, prepared, but_request_ids=True)
    assert codes_of(prepared) == [code]
    assert "secret" not in prepared.text
    # An unexpected error is logged with its request id, either way; the database's trouble is not.
    logged = [record.getMessage() for record in caplog.records if record.name == "credits_graphql.errors"]
    expected = [f"unexpected error at balance (request {answer.headers['x-request-id']})"
                for answer in (full, prepared)]
    assert logged == (expected if code == "INTERNAL_SERVER_ERROR" else [])


async def test_with_introspection_off_an_introspection_query_is_refused_every_time(runtime: Runtime,
                                                                                    org: Org) -> None:
    app = build_app(replace(runtime, settings=replace(runtime.settings, introspection=False)), run_worker=False)
    query = "{ __schema { queryType { name } } }"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for _ in range(3):
            answer = await client.post("/graphql", json={"query": query},
                                       headers={"Authorization": f"Bearer {org.admin}"})
            assert set(codes_of(answer)) == {"GRAPHQL_VALIDATION_FAILED"}, answer.text
    assert schema_of(app).documents.get(query) is None


def test_documents_are_bounded_and_the_oldest_forgotten_first() -> None:
    documents = ValidatedDocuments(maxsize=2)
    texts = ["{ a }", "{ b }", "{ c }"]
    for text in texts:
        documents.remember(text, parse(text))
    assert len(documents) == 2
    assert documents.get("{ a }") is None
    assert documents.get("{ c }") is not None
    off = ValidatedDocuments(maxsize=0)
    off.remember("{ a }", parse("{ a }"))
    assert off.get("{ a }") is None


def test_a_long_text_is_not_remembered() -> None:
    documents = ValidatedDocuments(max_query_length=20)
    short, long = "{ a }", "{ a }" + "#" * 20
    for text in (short, long):
        documents.remember(text, parse(text))
    assert documents.get(short) is not None
    assert documents.get(long) is None


async def test_a_long_query_text_is_answered_and_kept_by_no_cache(gql: GraphQLClient) -> None:
    def kept() -> tuple[int, ...]:
        return (_get_parse_cache(MAX_DOCUMENTS).cache_info().currsize,
                _get_validate_cache(MAX_DOCUMENTS).cache_info().currsize,
                len(limits._LITERALS._found), len(limits._VERDICTS._found))

    short = "{ __typename }"
    assert (await gql(short)) == {"__typename": "Query"}
    before = kept()
    for n in range(3):  # 1,024 request bodies of a 1 MB comment each once kept ~2 GB in a process
        long = f"# {n} " + "x" * limits.MAX_KEPT_QUERY_LENGTH + "\n" + short
        assert (await gql(long)) == {"__typename": "Query"}
    assert kept() == before
