"""recordUsageBatch through the API: per-item results and userErrors with the item's path, roles, limits."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.documents import (
    ATTEMPT_FIELDS,
    TRANSACTION_FIELDS,
    add_funds,
    codes_of,
    create_account,
    get_account,
    transactions,
    update_settings,
)
from tests.conftest import GraphQLClient, Org

BATCH = f"""
mutation($input: RecordUsageBatchInput!) {{
  recordUsageBatch(input: $input) {{ results {{
    transaction {{ {TRANSACTION_FIELDS} }} account {{ id balance {{ available {{ amount }} }} }}
    triggeredRecharge {{ {ATTEMPT_FIELDS} }} userErrors {{ field message code }} }} }}
}}"""
AUDIT = """{ auditEvents(first: 5) { edges { node { operation accountId input { name value } outcome } } } }"""
UNKNOWN_ACCOUNT = "QWNjb3VudDo5OTk5OTk="  # base64("Account:999999")


def usage(account_id: str, amount: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"accountId": account_id, "service": "DOMESTIC_CALLING", "amount": amount, "idempotencyKey": key,
            **extra}


async def batch(gql: GraphQLClient, items: list[dict[str, Any]], key: str | None = None) -> list[dict[str, Any]]:
    data = await gql(BATCH, {"input": {"items": items}}, key=key)
    results: list[dict[str, Any]] = data["recordUsageBatch"]["results"]
    return results


async def balance(gql: GraphQLClient, account_id: str) -> str:
    amount: str = (await get_account(gql, account_id))["balance"]["available"]["amount"]
    return amount


def errors(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(error["code"], error["field"]) for error in result["userErrors"]]


async def test_each_bad_item_answers_its_own_error_at_its_own_path_and_good_ones_are_recorded(
        gql: GraphQLClient, funded_id: str) -> None:
    results = await batch(gql, [
        usage(funded_id, "1", "a"), usage(funded_id, "0", "b"), usage(funded_id, "2", "c", minutes=-1),
        usage(funded_id, "500", "d"), usage(UNKNOWN_ACCOUNT, "1", "e"), usage(funded_id, "2.5", "f")])
    assert [r["transaction"]["balanceAfter"]["amount"] for r in (results[0], results[5])] == ["99.00", "96.50"]
    assert errors(results[1]) == [("INVALID_AMOUNT", ["input", "items", "1", "amount"])]
    assert errors(results[2]) == [("INVALID_INPUT", ["input", "items", "2", "minutes"])]
    assert errors(results[3]) == [("INSUFFICIENT_FUNDS", ["input", "items", "3", "amount"])]
    assert errors(results[4]) == [("ACCOUNT_NOT_FOUND", ["input", "items", "4", "accountId"])]
    assert all(results[i]["transaction"] is None for i in (1, 2, 3, 4))
    assert results[5]["account"] == {"id": funded_id, "balance": {"available": {"amount": "96.50"}}}
    assert await balance(gql, funded_id) == "96.50"


async def test_items_apply_in_order_and_running_out_refuses_only_what_does_not_fit(
        gql: GraphQLClient, funded_id: str) -> None:
    results = await batch(gql, [usage(funded_id, "40", f"k{n}") for n in range(3)] + [usage(funded_id, "20", "k3")])
    assert [r["transaction"]["balanceAfter"]["amount"] if r["transaction"] else None for r in results] == [
        "60.00", "20.00", None, "0.00"]
    assert errors(results[2]) == [("INSUFFICIENT_FUNDS", ["input", "items", "2", "amount"])]
    listed = (await transactions(gql, funded_id, kinds=["USAGE"]))["edges"]
    assert [edge["node"]["balanceAfter"]["amount"] for edge in listed] == ["0.00", "20.00", "60.00"]


async def test_a_replayed_batch_answers_the_same_transactions_and_moves_no_money(
        gql: GraphQLClient, funded_id: str) -> None:
    items = [usage(funded_id, "1", "a"), usage(funded_id, "2", "b"), usage(funded_id, "1", "a"),
             usage(funded_id, "3", "b")]
    first = await batch(gql, items)
    again = await batch(gql, items)
    assert first[2]["transaction"] == first[0]["transaction"]
    assert errors(first[3]) == [("IDEMPOTENCY_KEY_REUSED", ["input", "items", "3", "idempotencyKey"])]
    assert [r["transaction"] for r in again[:3]] == [r["transaction"] for r in first[:3]]
    assert errors(again[3]) == errors(first[3])
    assert await balance(gql, funded_id) == "97.00"


async def test_another_organizations_account_is_not_found_and_keeps_its_money(
        gql: GraphQLClient, funded_id: str, other_org: Org) -> None:
    foreign = await batch(gql.as_key(other_org.admin), [usage(funded_id, "1", "x")])
    assert errors(foreign[0]) == [("ACCOUNT_NOT_FOUND", ["input", "items", "0", "accountId"])]
    assert await balance(gql, funded_id) == "100.00"


async def test_crossing_the_trigger_answers_the_one_recharge_it_started(gql: GraphQLClient, funded_id: str) -> None:
    settings = await update_settings(gql, funded_id, enabled=True, recharge_amount="100", trigger_balance="80")
    assert settings["userErrors"] == []
    results = await batch(gql, [usage(funded_id, "15", f"k{n}") for n in range(3)])  # 85, 70 (< 80), 55
    assert [r["triggeredRecharge"] is not None for r in results] == [False, True, False]
    assert results[1]["triggeredRecharge"]["status"] == "PENDING"
    assert results[1]["triggeredRecharge"]["amount"]["amount"] == "100.00"
    assert (await get_account(gql, funded_id))["balance"]["pendingRecharge"]["id"] == \
        results[1]["triggeredRecharge"]["id"]


async def test_an_empty_or_oversized_batch_is_bad_input_and_records_nothing(
        gql: GraphQLClient, funded_id: str) -> None:
    for items in ([], [usage(funded_id, "0.01", f"k{n}") for n in range(1001)]):
        response = await gql.post(BATCH, {"input": {"items": items}})
        assert codes_of(response) == ["BAD_USER_INPUT"], len(items)
    assert await balance(gql, funded_id) == "100.00"


async def test_an_empty_or_oversized_batch_after_another_mutation_runs_neither(
        gql: GraphQLClient, funded_id: str) -> None:
    document = """mutation($funds: AddFundsInput!, $input: RecordUsageBatchInput!) {
      addFunds(input: $funds) { transaction { id } userErrors { code } }
      recordUsageBatch(input: $input) { results { userErrors { code } } } }"""
    funds = {"accountId": funded_id, "amount": "50", "idempotencyKey": "more"}
    for items in ([], [usage(funded_id, "0.01", f"k{n}") for n in range(1001)]):
        response = await gql.post(document, {"funds": funds, "input": {"items": items}})
        assert codes_of(response) == ["BAD_USER_INPUT"], len(items)
        assert response.json()["data"] is None
    assert await balance(gql, funded_id) == "100.00"  # the funds were not added either


async def test_a_malformed_id_or_amount_in_any_item_is_bad_input_and_records_nothing(
        gql: GraphQLClient, funded_id: str) -> None:
    malformed = [(usage("not-an-id", "1", "b"), "items[1].accountId"), (usage(funded_id, "1e2", "b"), "[1].amount")]
    for bad, where in malformed:
        response = await gql.post(BATCH, {"input": {"items": [usage(funded_id, "1", "a"), bad]}})
        assert codes_of(response) == ["BAD_USER_INPUT"], bad
        assert where in response.json()["errors"][0]["message"]  # which of up to 1,000 items to mend
        # the same within a document of several fields, which runs none of them
        response = await gql.post(BATCH.replace("mutation(", "mutation M(").replace(
            "recordUsageBatch(", "a: recordUsageBatch(").rstrip()[:-1] + " b: recordUsageBatch(input: $input) "
            "{ results { userErrors { code } } } }", {"input": {"items": [usage(funded_id, "1", "a"), bad]}})
        assert codes_of(response) == ["BAD_USER_INPUT"], bad
        assert where in response.json()["errors"][0]["message"]
    assert await balance(gql, funded_id) == "100.00"


async def test_a_full_batch_of_a_thousand_items_is_recorded(gql: GraphQLClient, funded_id: str) -> None:
    results = await batch(gql, [usage(funded_id, "0.01", f"k{n}") for n in range(1000)])
    assert [r["userErrors"] for r in results] == [[]] * 1000
    assert results[-1]["transaction"]["balanceAfter"]["amount"] == "90.00"
    assert await balance(gql, funded_id) == "90.00"


async def test_a_reader_may_not_record_usage_in_batches(gql: GraphQLClient, org: Org, funded_id: str) -> None:
    response = await gql.post(BATCH, {"input": {"items": [usage(funded_id, "1", "r")]}}, key=org.reader)
    assert codes_of(response) == ["FORBIDDEN"]
    results = await batch(gql, [usage(funded_id, "1", "w")], key=org.usage_writer)
    assert results[0]["transaction"]["amount"]["amount"] == "-1.00"
    assert await balance(gql, funded_id) == "99.00"


async def test_a_batch_is_audited_once_with_its_size_and_no_items(gql: GraphQLClient, funded_id: str) -> None:
    await batch(gql, [usage(funded_id, "1", "a", reference="secret-ish"), usage(funded_id, "1", "b")])
    [event] = [e["node"] for e in (await gql(AUDIT))["auditEvents"]["edges"]
               if e["node"]["operation"] == "recordUsageBatch"]
    assert event["input"] == [{"name": "items", "value": "2"}]
    assert event["outcome"] == "OK"


async def test_concurrent_batches_on_the_same_accounts_lose_no_usage(gql: GraphQLClient, funded_id: str) -> None:
    other = (await create_account(gql, "Second", "SEK", "tok_visa"))["id"]
    await add_funds(gql, other, "100", "seed-2")
    chunks = [[usage(account, "0.5", f"b{n}-{i}-{account}") for i in range(10) for account in (funded_id, other)]
              for n in range(5)]
    results = await asyncio.gather(*(batch(gql, chunk) for chunk in chunks))
    assert all(r["userErrors"] == [] for chunk in results for r in chunk)
    assert [await balance(gql, account) for account in (funded_id, other)] == ["75.00", "75.00"]
