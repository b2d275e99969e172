"""Unexpected failures are masked: INTERNAL_SERVER_ERROR, a generic message, no details; nothing half-done."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from credits_graphql.api.http import GraphQLEndpoint
from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.domain.money import Money
from credits_graphql.service import queries, usage_combiner
from credits_graphql.service.payments import CardDetails, ChargeResult
from credits_graphql.service.transient import StoreUnavailable
from tests.api.documents import ACCOUNTS, CREATE_ACCOUNT, add_funds, codes_of, create_account, history
from tests.conftest import GraphQLClient, Org

SECRET = "secret SQL details: SELECT * FROM api_keys"


class BrokenGateway:
    """A gateway whose every call fails in an unexpected way."""

    async def describe(self, token: str) -> CardDetails:
        raise RuntimeError(SECRET)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        raise RuntimeError(SECRET)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        raise RuntimeError(SECRET)


@pytest.fixture
async def broken(runtime: Runtime, org: Org) -> AsyncIterator[GraphQLClient]:
    """A client of an app whose payment gateway is broken, over the same database."""
    app = build_app(replace(runtime, deps=replace(runtime.deps, gateway=BrokenGateway())), run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield GraphQLClient(client, org.admin)


def _assert_masked(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert codes_of(response) == ["INTERNAL_SERVER_ERROR"]
    error = response.json()["errors"][0]
    assert error["message"] == "Internal server error."
    assert "secret" not in response.text.lower()
    assert "select" not in response.text.lower()
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


async def test_a_failing_gateway_on_create_account_is_a_masked_internal_error(
        broken: GraphQLClient, gql: GraphQLClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = await broken.post(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": "SEK",
                                                                "paymentMethod": {"token": "tok_visa"}}})
    _assert_masked(response)
    assert (await gql(ACCOUNTS))["accounts"]["totalCount"] == 0
    assert SECRET in caplog.text  # the details go to the log instead


async def test_a_failing_gateway_on_add_funds_is_masked_and_moves_no_money(broken: GraphQLClient,
                                                                           gql: GraphQLClient) -> None:
    account = await create_account(gql, "Ops", "SEK", "tok_visa")
    response = await broken.post("""mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "100",
        idempotencyKey: "k"}) { transaction { id } userErrors { code } } }""", {"id": account["id"]})
    _assert_masked(response)
    assert await history(gql, account["id"]) == []
    retried = await add_funds(gql, account["id"], "100", "k")  # the key is not used up
    assert retried["userErrors"] == []
    assert await history(gql, account["id"]) == [("FUNDS_ADDED", "100.00")]


async def test_queries_keep_working_beside_a_broken_gateway(broken: GraphQLClient, gql: GraphQLClient) -> None:
    await create_account(gql, "Ops", "SEK", token=None)
    assert (await broken(ACCOUNTS))["accounts"]["totalCount"] == 1


async def test_a_failure_outside_graphql_execution_is_answered_in_json_with_a_code(
        runtime: Runtime, org: Org, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def broken_run(*_: object, **__: object) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(GraphQLEndpoint, "run", broken_run)
    app = build_app(runtime, run_worker=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.ERROR):
            response = await client.post("/graphql", json={"query": ACCOUNTS},
                                         headers={"Authorization": f"Bearer {org.admin}", "X-Request-ID": "req-42"})
    # The operator finds the failure by the id the client was given:
    assert [record.getMessage() for record in caplog.records if "req-42" in record.getMessage()] == [
        f"unexpected error in request req-42: RuntimeError({SECRET!r})"]
    assert response.status_code == 500
    assert response.json() == {"errors": [{"message": "Internal server error.",
                                           "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-42"}}]}
    assert response.headers["x-request-id"] == "req-42"
    assert SECRET not in response.text


async def test_the_database_lost_in_the_middle_of_a_request_is_a_503_to_retry(
        gql: GraphQLClient, org: Org, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """As when the database is down before the request begins (README, Failures): a client or a proxy that retries
    on 503 retries this one too, with its idempotency key."""
    account = await create_account(gql, "Ops", "SEK", "tok_visa")

    async def lost(*_: object, **__: object) -> None:
        raise StoreUnavailable("connection lost")

    monkeypatch.setattr(usage_combiner, "record_usage", lost)
    response = await gql.post("""mutation($id: ID!) { recordUsage(input: {accountId: $id, service: TOLL_FREE,
        amount: "1", idempotencyKey: "k"}) { transaction { id } } }""", {"id": account["id"]}, key=org.usage_writer)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["data"] is None
    assert codes_of(response) == ["SERVICE_UNAVAILABLE"]
    assert any(record.levelno == logging.WARNING and "failed on the database at recordUsage: connection lost"
               in record.getMessage() for record in caplog.records), "the operator sees it in the log"
    # Its ERROR event is not written: a database that refused the call would refuse the event too, after as long
    # a wait (a busy SQLite: another 30 s before the 503). The log keeps the call.
    events = await gql("{ auditEvents(first: 5) { edges { node { operation outcome } } } }")
    assert [edge["node"]["operation"] for edge in events["auditEvents"]["edges"]] == ["createAccount"]
    assert any("audit event of recordUsage" in record.getMessage() and "SERVICE_UNAVAILABLE" in record.getMessage()
               for record in caplog.records)


async def test_a_query_whose_every_field_the_database_failed_is_a_503_not_a_null_to_take_for_not_found(
        gql: GraphQLClient, funded_id: str, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    async def lost(*_: object, **__: object) -> None:
        raise StoreUnavailable("too many clients")

    monkeypatch.setattr(queries, "attempts_by_id", lost)
    attempt_id = base64.b64encode(b"RechargeAttempt:1").decode()
    response = await gql.post("query($id: ID!) { node(id: $id) { id } }", {"id": attempt_id}, key=org.reader)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert codes_of(response) == ["SERVICE_UNAVAILABLE"]
    # beside a field that was served, the null is the one field's, told by its error: the data is worth having
    both = await gql.post("query($id: ID!) { node(id: $id) { id } accounts(first: 5) { totalCount } }",
                          {"id": attempt_id}, key=org.reader)
    assert both.status_code == 200, both.text
    assert both.json()["data"] == {"node": None, "accounts": {"totalCount": 1}}
    assert codes_of(both) == ["SERVICE_UNAVAILABLE"]
