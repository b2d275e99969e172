"""Malformed input is a GraphQL error coded BAD_USER_INPUT that changes nothing; broken documents are
GRAPHQL_PARSE_FAILED or GRAPHQL_VALIDATION_FAILED; no error carries a stack trace."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.api.documents import (
    ACCOUNT_TRANSACTIONS,
    ACCOUNTS,
    ADD_FUNDS,
    BALANCE,
    NODE,
    RECHARGE_ATTEMPTS,
    RECORD_USAGE,
    TRANSACTIONS,
    UPDATE_SETTINGS,
    add_funds,
    codes_of,
    create_account,
    errors_of,
    history,
    transactions,
)
from tests.conftest import GraphQLClient

BAD_DECIMALS: list[Any] = [12.5, 100, "1e2", "1E2", "NaN", "Infinity", "-Infinity", " 1", "1 ", "1,000.00", "+10",
                           ".5", "10.", "0x10", "", "\u0661\u0660\u0660"]


def assert_clean(response: httpx.Response) -> None:
    """No stack trace, no exception details, in any error."""
    text = response.text
    assert "Traceback" not in text
    assert 'File "' not in text
    for error in errors_of(response):
        extensions = error.get("extensions", {})
        assert "exception" not in extensions
        assert "stacktrace" not in extensions


def assert_bad_input(response: httpx.Response) -> None:
    assert response.status_code in (200, 400), response.text
    assert codes_of(response), response.text
    assert set(codes_of(response)) == {"BAD_USER_INPUT"}, response.text
    data = response.json().get("data")
    assert data is None or all(value is None for value in data.values()), response.text
    assert_clean(response)


async def test_a_malformed_decimal_variable_is_bad_user_input_and_moves_no_money(gql: GraphQLClient,
                                                                                 account_id: str) -> None:
    for amount in BAD_DECIMALS:
        response = await gql.post(ADD_FUNDS, {"input": {"accountId": account_id, "amount": amount,
                                                        "idempotencyKey": "k"}})
        assert_bad_input(response)
    assert await history(gql, account_id) == []


async def test_a_malformed_decimal_literal_is_bad_user_input_and_moves_no_money(gql: GraphQLClient,
                                                                                account_id: str) -> None:
    for literal in ["12.5", "100", '"1e2"', '"NaN"', '"Infinity"', '" 1"', "true", "null"]:
        document = f"""mutation($id: ID!) {{ addFunds(input: {{accountId: $id, amount: {literal}, idempotencyKey: "k"}})
            {{ transaction {{ id }} userErrors {{ code }} }} }}"""
        assert_bad_input(await gql.post(document, {"id": account_id}))
    assert await history(gql, account_id) == []


async def test_a_malformed_usage_amount_records_nothing(gql: GraphQLClient, funded_id: str) -> None:
    for amount in BAD_DECIMALS:
        response = await gql.post(RECORD_USAGE, {"input": {"accountId": funded_id, "amount": amount,
                                                           "idempotencyKey": "u", "service": "TOLL_FREE"}})
        assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_a_malformed_recharge_amount_changes_no_settings(gql: GraphQLClient, funded_id: str) -> None:
    response = await gql.post(UPDATE_SETTINGS, {"input": {"accountId": funded_id, "enabled": True,
                                                          "rechargeAmount": "2e2", "triggerBalance": "50"}})
    assert_bad_input(response)
    # A form can show it by its field: the message names the input and what was found, each once
    message = response.json()["errors"][0]["message"]
    assert ".rechargeAmount" in message, message
    assert message.count("2e2") == 1, message
    settings = (await gql("query($id: ID!) { account(id: $id) { rechargeSettings { status } } }",
                          {"id": funded_id}))["account"]["rechargeSettings"]
    assert settings == {"status": "DISABLED"}


async def test_an_unknown_enum_variable_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    response = await gql.post(RECORD_USAGE, {"input": {"accountId": funded_id, "amount": "1",
                                                       "idempotencyKey": "u", "service": "CARRIER_PIGEON"}})
    assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_an_unknown_enum_literal_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    document = """mutation($id: ID!) { recordUsage(input: {accountId: $id, service: CARRIER_PIGEON, amount: "1",
        idempotencyKey: "u"}) { transaction { id } } }"""
    assert_bad_input(await gql.post(document, {"id": funded_id}))
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_an_unknown_transaction_kind_filter_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    assert_bad_input(await gql.post(TRANSACTIONS, {"id": funded_id, "kinds": ["REFUND"]}))
    literal = """query($id: ID!) { transactions(accountId: $id, kinds: [REFUND]) { totalCount } }"""
    assert_bad_input(await gql.post(literal, {"id": funded_id}))


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


async def test_a_bad_cursor_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    # garbage, an account id, "k1:-1", "k1:x", "k1:0", "k1:60" with a stray character, "k1: 60", "k1:060" (the
    # earlier spelling), and today's spelling with a bad position
    for cursor in ["not-a-cursor", "!!!", "", "QWNjb3VudDox", "azE6LTE=", "azE6eA==", "azE6MA==", "azE6NjA=x",
                   "azE6IDYw", "azE6MDYw", b64("k1:60"), b64("k2:accounts:-1"), b64("k2:accounts:x"),
                   b64("k2:accounts:0"), b64("k2:accounts: 60"), b64("k2:accounts:060"), b64("k2:accounts:60") + "x",
                   b64("k2::60"), b64("k2:60")]:
        assert_bad_input(await gql.post(TRANSACTIONS, {"id": funded_id, "after": cursor}))
        assert_bad_input(await gql.post(ACCOUNTS, {"after": cursor}))


async def test_a_cursor_of_another_list_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    """Paging one account's history from a place in another's (an app mixing up its lists) would answer a page
    of the wrong entries, or none."""
    other = (await create_account(gql, "Other", "SEK", "tok_visa"))["id"]
    await add_funds(gql, other, "5", "other-seed")
    cursor = (await transactions(gql, funded_id, first=1))["pageInfo"]["endCursor"]
    for response in [await gql.post(TRANSACTIONS, {"id": other, "after": cursor}),
                     await gql.post(ACCOUNTS, {"after": cursor}),
                     await gql.post(RECHARGE_ATTEMPTS, {"id": funded_id, "after": cursor})]:
        assert_bad_input(response)
        assert "cursor of another list" in response.json()["errors"][0]["message"]
    # The list that gave it takes it, nested or filtered: a filter only thins the account's history.
    nested = await gql(ACCOUNT_TRANSACTIONS, {"id": funded_id, "after": cursor, "kinds": ["USAGE"]})
    assert nested["account"]["transactions"]["edges"] == []
    assert (await transactions(gql, funded_id, after=cursor))["pageInfo"]["hasPreviousPage"] is True


async def test_a_cursor_of_another_account_in_a_mutation_payload_refuses_the_mutation_before_it_runs(
        gql: GraphQLClient, funded_id: str) -> None:
    other = (await create_account(gql, "Other", "SEK", "tok_visa"))["id"]
    cursor = (await transactions(gql, funded_id, first=1))["pageInfo"]["endCursor"]
    document = """mutation($input: AddFundsInput!, $after: String) { addFunds(input: $input) {
      account { transactions(first: 5, after: $after) { totalCount } } userErrors { code } } }"""
    response = await gql.post(document, {"input": {"accountId": other, "amount": "100", "idempotencyKey": "k"},
                                         "after": cursor})
    assert_bad_input(response)
    assert "cursor of another list" in response.json()["errors"][0]["message"]
    assert await history(gql, other) == []  # no money moved
    paged = await gql(document, {"input": {"accountId": funded_id, "amount": "10", "idempotencyKey": "k"},
                                 "after": cursor})  # its own account's cursor pages as anywhere
    assert paged["addFunds"]["account"]["transactions"]["totalCount"] == 2


async def test_a_page_size_outside_zero_to_one_hundred_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    nested = "query($id: ID!, $first: Int) { account(id: $id) { rechargeAttempts(first: $first) { totalCount } } }"
    for first in [101, -1, 1000000]:
        assert_bad_input(await gql.post(ACCOUNTS, {"first": first}))
        assert_bad_input(await gql.post(TRANSACTIONS, {"id": funded_id, "first": first}))
        assert_bad_input(await gql.post(nested, {"id": funded_id, "first": first}))
        assert_bad_input(await gql.post(f"{{ accounts(first: {first}) {{ totalCount }} }}"))


async def test_an_undecodable_global_id_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    # garbage, "Account", "Account:abc", "Account:-1"; and account 1 or 3 spelled otherwise than handed out:
    # "Account: 1", "Account:" with an Arabic-Indic 3, a trailing newline, "Account:01"
    for bad_id in ["%%%", "not base64", "QWNjb3VudA==", "QWNjb3VudDphYmM=", "QWNjb3VudDotMQ==",
                   "QWNjb3VudDogMQ==", "QWNjb3VudDrZow==", "QWNjb3VudDox\n", "QWNjb3VudDowMQ=="]:
        assert_bad_input(await gql.post(NODE, {"id": bad_id}))
        assert_bad_input(await gql.post("query($id: ID!) { account(id: $id) { id } }", {"id": bad_id}))
        assert_bad_input(await gql.post(BALANCE, {"id": bad_id}))
        response = await gql.post(ADD_FUNDS, {"input": {"accountId": bad_id, "amount": "100", "idempotencyKey": "k"}})
        assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_a_date_time_without_offset_or_not_iso_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    for occurred_at in ["2026-01-02T03:04:05", "2026-01-02", "yesterday", "1767323045", 1767323045]:
        response = await gql.post(RECORD_USAGE, {"input": {
            "accountId": funded_id, "amount": "1", "idempotencyKey": "u", "service": "TOLL_FREE",
            "occurredAt": occurred_at}})
        assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_a_date_time_literal_without_offset_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    document = """mutation($id: ID!) { recordUsage(input: {accountId: $id, service: TOLL_FREE, amount: "1",
        idempotencyKey: "u", occurredAt: "2026-01-02T03:04:05"}) { transaction { id } } }"""
    assert_bad_input(await gql.post(document, {"id": funded_id}))
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_a_document_that_does_not_parse_is_graphql_parse_failed(gql: GraphQLClient) -> None:
    response = await gql.post("mutation {")
    assert codes_of(response) == ["GRAPHQL_PARSE_FAILED"]
    assert_clean(response)


async def test_an_unknown_field_is_graphql_validation_failed(gql: GraphQLClient) -> None:
    response = await gql.post("{ accounts { totalCount secretBalance } }")
    assert codes_of(response) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "data" not in response.json() or response.json()["data"] is None
    assert_clean(response)


async def test_a_missing_required_argument_is_graphql_validation_failed(gql: GraphQLClient) -> None:
    response = await gql.post("{ account { id } }")
    assert codes_of(response) == ["GRAPHQL_VALIDATION_FAILED"]
    assert_clean(response)


async def test_a_body_that_is_not_json_is_refused_without_internals(gql: GraphQLClient, http: httpx.AsyncClient,
                                                                    org: Any) -> None:
    response = await http.post("/graphql", content=b"{not json", headers={
        "Authorization": f"Bearer {org.admin}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert_clean(response)
    assert json.loads(response.text)["errors"][0]["message"]


async def test_minutes_beyond_a_graphql_int_are_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    for minutes in [2**31, 1.5, "3"]:
        response = await gql.post(RECORD_USAGE, {"input": {"accountId": funded_id, "amount": "1",
                                                           "idempotencyKey": "u", "service": "TOLL_FREE",
                                                           "minutes": minutes}})
        assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_a_decimal_longer_than_any_amount_is_bad_user_input(gql: GraphQLClient, funded_id: str) -> None:
    response = await gql.post(RECORD_USAGE, {"input": {"accountId": funded_id, "amount": "0." + "0" * 200 + "1",
                                                       "idempotencyKey": "u", "service": "TOLL_FREE"}})
    assert_bad_input(response)
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]
