"""API keys, roles and tenant isolation through the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from credits_graphql.domain.access import Role
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from tests.api.documents import (
    ACCOUNT,
    ACCOUNT_TRANSACTIONS,
    ACCOUNTS,
    ADD_FUNDS,
    BALANCE,
    CLOSE_ACCOUNT,
    CREATE_ACCOUNT,
    NODE,
    RECHARGE_ATTEMPTS,
    RECORD_USAGE,
    TRANSACTIONS,
    UPDATE_PAYMENT_METHOD,
    UPDATE_SETTINGS,
    add_funds,
    codes_of,
    create_account,
    get_account,
    history,
    usage_and_funds,
    user_error,
)
from tests.conftest import GraphQLClient, Org, make_org


def _assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def _mutations(account_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "createAccount": (CREATE_ACCOUNT, {"input": {"name": "X", "currencyCode": "SEK"}}),
        "addFunds": (ADD_FUNDS, {"input": {"accountId": account_id, "amount": "100", "idempotencyKey": "r"}}),
        "updateRechargeSettings": (UPDATE_SETTINGS, {"input": {"accountId": account_id, "enabled": True,
                                                               "rechargeAmount": "200", "triggerBalance": "50"}}),
        "updatePaymentMethod": (UPDATE_PAYMENT_METHOD, {"input": {"accountId": account_id,
                                                                  "paymentMethod": {"token": "tok_mastercard"}}}),
        "recordUsage": (RECORD_USAGE, {"input": {"accountId": account_id, "amount": "1", "idempotencyKey": "r",
                                                 "service": "TOLL_FREE"}}),
        "closeAccount": (CLOSE_ACCOUNT, {"input": {"accountId": account_id}}),
    }


async def _snapshot(gql: GraphQLClient, account_id: str) -> tuple[Any, ...]:
    account = await get_account(gql, account_id)
    count = (await gql(ACCOUNTS))["accounts"]["totalCount"]
    return (account["status"], account["balance"]["available"], account["rechargeSettings"],
            account["paymentMethod"], await history(gql, account_id), count)


# authentication

async def test_a_request_without_a_key_is_unauthenticated(gql: GraphQLClient) -> None:
    response = await gql.http.post("/graphql", json={"query": "{ accounts { totalCount } }"})
    _assert_unauthenticated(response)


async def test_an_unknown_key_or_scheme_is_unauthenticated(gql: GraphQLClient, org: Org) -> None:
    for header in ["Bearer cgk_unknown", "Bearer nonsense", "Bearer ", "Basic dXNlcjpwYXNz", org.admin,
                   f"Bearer {org.admin}x", f"Bearer {org.admin[:-1]}"]:
        response = await gql.http.post("/graphql", json={"query": "{ accounts { totalCount } }"},
                                       headers={"Authorization": header})
        _assert_unauthenticated(response)


async def test_an_unauthenticated_caller_is_told_what_to_mend(gql: GraphQLClient, org: Org) -> None:
    expected = {None: "Missing API key.", "Bearer ": "Missing API key.",
                "Basic dXNlcjpwYXNz": "The Authorization header must use the Bearer scheme.",
                org.admin: "The Authorization header must use the Bearer scheme.",
                "Bearer cgk_unknown": "Unknown, revoked or expired API key."}
    for header, reason in expected.items():
        response = await gql.http.post("/graphql", json={"query": "{ accounts { totalCount } }"},
                                       headers={"Authorization": header} if header is not None else {})
        assert response.json()["errors"][0]["message"] == f"{reason} Send Authorization: Bearer <api key>."


async def test_a_forbidden_call_names_the_roles_that_may_make_it(gql: GraphQLClient, funded_id: str,
                                                                 org: Org) -> None:
    document, variables = _mutations(funded_id)["closeAccount"]
    closing = await gql.post(document, variables, key=org.usage_writer)
    assert closing.json()["errors"][0]["message"] == "This API key's role may not manage accounts (ADMIN keys may)."
    document, variables = _mutations(funded_id)["recordUsage"]
    reporting = await gql.post(document, variables, key=org.reader)
    assert reporting.json()["errors"][0]["message"] == (
        "This API key's role may not record usage (ADMIN and USAGE_WRITER keys may).")


async def test_a_revoked_key_is_unauthenticated(gql: GraphQLClient, deps: Deps, org: Org) -> None:
    key, secret = await access.create_api_key(deps, org.id, Role.READER)
    assert (await gql("{ accounts { totalCount } }", key=secret))["accounts"]["totalCount"] == 0
    assert await access.revoke_api_key(deps, key.id)
    _assert_unauthenticated(await gql.post("{ accounts { totalCount } }", key=secret))


def _sent_in_two_parts(body: bytes, meanwhile: Callable[[], Awaitable[None]]) -> AsyncIterator[bytes]:
    """A request body whose second half is sent only once `meanwhile` is done: a slow client."""
    async def parts() -> AsyncIterator[bytes]:
        yield body[:10]
        await meanwhile()
        yield body[10:]

    return parts()


async def test_a_key_revoked_while_its_request_body_arrives_is_refused_and_the_mutation_runs_not(
        gql: GraphQLClient, http: httpx.AsyncClient, deps: Deps, funded_id: str, org: Org) -> None:
    document, variables = _mutations(funded_id)["addFunds"]
    body = json.dumps({"query": document, "variables": variables}).encode()
    await gql(document, {"input": {**variables["input"], "idempotencyKey": "known-text"}})  # the short way too
    before = await _snapshot(gql, funded_id)
    for length in ({}, {"Content-Length": str(len(body))}):  # chunked: Strawberry's way; with a length: the short
        key, secret = await access.create_api_key(deps, org.id, Role.ADMIN)

        async def revoke(key_id: int = key.id) -> None:
            assert await access.revoke_api_key(deps, key_id)

        response = await http.post("/graphql", content=_sent_in_two_parts(body, revoke), headers={
            "Authorization": f"Bearer {secret}", "Content-Type": "application/json", **length})
        _assert_unauthenticated(response)
    assert await _snapshot(gql, funded_id) == before


async def test_a_mutation_without_a_key_changes_nothing(gql: GraphQLClient, http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json={"query": CREATE_ACCOUNT,
                                                 "variables": {"input": {"name": "X", "currencyCode": "SEK"}}})
    _assert_unauthenticated(response)
    assert (await gql(ACCOUNTS))["accounts"]["totalCount"] == 0


async def test_every_mutation_with_an_unknown_or_revoked_admin_key_changes_nothing(
        gql: GraphQLClient, deps: Deps, funded_id: str, org: Org) -> None:
    key, revoked = await access.create_api_key(deps, org.id, access.Role.ADMIN)
    assert await access.revoke_api_key(deps, key.id)
    before = await _snapshot(gql, funded_id)
    for secret in [revoked, "cgk_unknown", f"{org.admin}x"]:
        for mutation, (document, variables) in _mutations(funded_id).items():
            response = await gql.post(document, variables, key=secret)
            _assert_unauthenticated(response)
            assert "data" not in response.json(), mutation
    assert await _snapshot(gql, funded_id) == before


# roles

async def test_a_reader_may_run_every_query(gql: GraphQLClient, funded_id: str, org: Org) -> None:
    reader = gql.as_key(org.reader)
    assert (await reader(ACCOUNT, {"id": funded_id}))["account"]["id"] == funded_id
    assert (await reader(ACCOUNTS))["accounts"]["totalCount"] == 1
    assert (await reader(BALANCE, {"id": funded_id}))["balance"]["available"]["amount"] == "100.00"
    assert (await reader(TRANSACTIONS, {"id": funded_id}))["transactions"]["totalCount"] == 1
    assert (await reader(ACCOUNT_TRANSACTIONS, {"id": funded_id}))["account"]["transactions"]["totalCount"] == 1
    assert (await reader(RECHARGE_ATTEMPTS, {"id": funded_id}))["account"]["rechargeAttempts"]["totalCount"] == 0
    assert (await reader(NODE, {"id": funded_id}))["node"]["id"] == funded_id


async def test_a_reader_may_run_no_mutation_and_changes_nothing(gql: GraphQLClient, funded_id: str,
                                                                org: Org) -> None:
    before = await _snapshot(gql, funded_id)
    for mutation, (document, variables) in _mutations(funded_id).items():
        response = await gql.post(document, variables, key=org.reader)
        assert response.status_code == 200
        assert codes_of(response) == ["FORBIDDEN"], mutation
        assert response.json()["errors"][0]["path"] == [mutation]
    assert await _snapshot(gql, funded_id) == before


async def test_a_usage_writer_may_run_no_admin_mutation(gql: GraphQLClient, funded_id: str, org: Org) -> None:
    before = await _snapshot(gql, funded_id)
    for mutation, (document, variables) in _mutations(funded_id).items():
        if mutation == "recordUsage":
            continue
        response = await gql.post(document, variables, key=org.usage_writer)
        assert codes_of(response) == ["FORBIDDEN"], mutation
    assert await _snapshot(gql, funded_id) == before


async def test_a_usage_writer_may_record_usage_and_read(gql: GraphQLClient, funded_id: str, org: Org) -> None:
    writer = gql.as_key(org.usage_writer)
    document, variables = _mutations(funded_id)["recordUsage"]
    result = (await writer(document, variables))["recordUsage"]
    assert result["userErrors"] == []
    assert result["transaction"]["balanceAfter"]["amount"] == "99.00"
    assert (await writer(BALANCE, {"id": funded_id}))["balance"]["available"]["amount"] == "99.00"


VIEWER = """{ viewer { apiKeyId role mayRecordUsage mayManageAccounts mayMoveFunds mayReadAuditTrail } }"""
NEEDS = {"createAccount": "mayManageAccounts", "updateRechargeSettings": "mayManageAccounts",
         "updatePaymentMethod": "mayManageAccounts", "closeAccount": "mayManageAccounts",
         "addFunds": "mayMoveFunds", "recordUsage": "mayRecordUsage"}


async def test_the_viewer_says_what_its_key_may_do_and_every_call_agrees(
        gql: GraphQLClient, funded_id: str, org: Org, deps: Deps) -> None:
    """An SPA shows only what its key may do: what `viewer` says is what the service then allows."""
    for role, key in ((Role.READER, org.reader), (Role.USAGE_WRITER, org.usage_writer), (Role.ADMIN, org.admin)):
        viewer = (await gql(VIEWER, key=key))["viewer"]
        assert viewer["role"] == role.value
        assert viewer["apiKeyId"] in {str(k.id) for k in await access.list_api_keys(deps, org.id) if k.role is role}
        for mutation, (document, variables) in _mutations(funded_id).items():
            body = (await gql.post(document, variables, key=key)).json()
            refused = [error["extensions"]["code"] for error in body.get("errors", [])] == ["FORBIDDEN"]
            assert refused is not viewer[NEEDS[mutation]], (role, mutation)
        audit = (await gql.post("{ auditEvents { totalCount } }", key=key)).json()
        assert (audit["data"]["auditEvents"] is None) is not viewer["mayReadAuditTrail"], role


# tenant isolation


async def test_another_organizations_account_or_transaction_read_beside_our_own_is_null(
        gql: GraphQLClient, deps: Deps) -> None:
    """Ids read together go to the database in one statement (a DataLoader), which must filter by organization as
    a lone read does."""
    other = gql.as_key((await make_org(deps, "Globex")).admin)
    mine, theirs = (await create_account(gql))["id"], (await create_account(other))["id"]
    accounts = await gql("""query($mine: ID!, $theirs: ID!) { mine: account(id: $mine) { id }
        theirs: account(id: $theirs) { id name balance { available { amount } } } }""",
                         {"mine": mine, "theirs": theirs})
    assert accounts == {"mine": {"id": mine}, "theirs": None}
    transactions = {"mine": (await add_funds(gql, mine, "10", "k1"))["transaction"]["id"],
                    "theirs": (await add_funds(other, theirs, "20", "k2"))["transaction"]["id"]}
    nodes = await gql("""query($mine: ID!, $theirs: ID!) { mine: node(id: $mine) { id }
        theirs: node(id: $theirs) { id ... on Transaction { amount { amount } } } }""", transactions)
    assert nodes == {"mine": {"id": transactions["mine"]}, "theirs": None}

async def test_another_organizations_account_is_invisible_to_every_query(gql: GraphQLClient, funded_id: str,
                                                                        other_org: Org) -> None:
    other = gql.as_key(other_org.admin)
    assert (await other(ACCOUNT, {"id": funded_id}))["account"] is None
    assert (await other(BALANCE, {"id": funded_id}))["balance"] is None
    assert (await other(TRANSACTIONS, {"id": funded_id}))["transactions"] is None
    assert (await other(NODE, {"id": funded_id}))["node"] is None
    assert (await other(ACCOUNTS))["accounts"] == {
        "totalCount": 0, "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}}


async def test_another_organizations_account_is_not_found_by_every_mutation(gql: GraphQLClient, funded_id: str,
                                                                           other_org: Org) -> None:
    before = await _snapshot(gql, funded_id)
    for mutation, (document, variables) in _mutations(funded_id).items():
        if mutation == "createAccount":
            continue
        payload = (await gql(document, variables, key=other_org.admin))[mutation]
        assert user_error(payload) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"]), mutation
    assert await _snapshot(gql, funded_id) == before


async def test_another_organizations_usage_writer_cannot_debit_the_account(gql: GraphQLClient, funded_id: str,
                                                                           other_org: Org) -> None:
    document, variables = _mutations(funded_id)["recordUsage"]
    payload = (await gql(document, variables, key=other_org.usage_writer))["recordUsage"]
    assert user_error(payload) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_an_unknown_and_a_foreign_account_answer_the_same(gql: GraphQLClient, funded_id: str,
                                                                other_org: Org) -> None:
    other = gql.as_key(other_org.admin)
    own = (await other(CREATE_ACCOUNT, {"input": {"name": "Mine", "currencyCode": "SEK"}}))["createAccount"]
    unknown_id = "QWNjb3VudDo5OTk5OTk="
    variables = {"input": {"accountId": funded_id, "amount": "1", "idempotencyKey": "r", "service": "TOLL_FREE"}}
    foreign = (await other(RECORD_USAGE, variables))["recordUsage"]
    variables["input"]["accountId"] = unknown_id
    missing = (await other(RECORD_USAGE, variables))["recordUsage"]
    assert foreign == missing
    assert own["account"]["id"] != funded_id
    assert [e["node"]["name"] for e in (await other(ACCOUNTS))["accounts"]["edges"]] == ["Mine"]


async def test_a_mutation_document_with_one_forbidden_field_runs_none_of_its_fields(
        gql: GraphQLClient, funded_id: str, org: Org) -> None:
    # Run one by one, recordUsage would move money and the FORBIDDEN addFunds would null the whole answer.
    before = await _snapshot(gql, funded_id)
    document = usage_and_funds(funded_id, "7")
    response = await gql.post(document, key=org.usage_writer)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert codes_of(response) == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["funded"]
    assert await _snapshot(gql, funded_id) == before
    # Each on its own, the allowed one goes through.
    document = document.replace(document[document.index("funded:"):document.rindex("}")], "")
    assert (await gql(document, key=org.usage_writer))["used"]["transaction"]["id"]


async def test_a_forbidden_field_that_skip_or_include_leaves_out_does_not_refuse_the_document(
        gql: GraphQLClient, funded_id: str, org: Org) -> None:
    document = f"""mutation($admin: Boolean!) {{
      used: recordUsage(input: {{accountId: "{funded_id}", service: TOLL_FREE, amount: "7", idempotencyKey: "m1"}})
        {{ transaction {{ id }} }}
      funded: addFunds(input: {{accountId: "{funded_id}", amount: "50", idempotencyKey: "m2"}}) @include(if: $admin)
        {{ transaction {{ id }} }}
    }}"""
    answer = await gql(document, {"admin": False}, key=org.usage_writer)
    assert answer["used"]["transaction"]["id"]
    assert "funded" not in answer
    refused = await gql.post(document, {"admin": True}, key=org.usage_writer)
    assert codes_of(refused) == ["FORBIDDEN"]
    skipped = document.replace("@include(if: $admin)", "@skip(if: $admin)").replace('"m1"', '"m3"')
    assert codes_of(await gql.post(skipped, {"admin": False}, key=org.usage_writer)) == ["FORBIDDEN"]
    assert (await gql(skipped, {"admin": True}, key=org.usage_writer))["used"]["transaction"]["id"]


async def test_concurrent_requests_with_different_keys_each_get_their_own_answer(
        gql: GraphQLClient, deps: Deps, funded_id: str, org: Org, other_org: Org) -> None:
    """Keys of requests in flight together are read together (service/key_reads.py): each request still answers
    as its own key allows, a revoked key's requests included."""
    revoked, revoked_secret = await access.create_api_key(deps, org.id, Role.READER)
    assert await access.revoke_api_key(deps, revoked.id)
    keys = [org.admin, org.reader, other_org.admin, revoked_secret, "cgk_no-such-key", org.usage_writer] * 5
    responses = await asyncio.gather(*(gql.post(BALANCE, {"id": funded_id}, key=key) for key in keys))
    for key, response in zip(keys, responses, strict=True):
        if key in (revoked_secret, "cgk_no-such-key"):
            _assert_unauthenticated(response)
            continue
        balance = response.json()["data"]["balance"]
        if key == other_org.admin:
            assert balance is None
        else:
            assert balance["available"] == {"amount": "100.00", "currencyCode": "SEK"}
