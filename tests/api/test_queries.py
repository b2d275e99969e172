"""Every query through the API: node, account, accounts, balance, transactions and rechargeAttempts."""

from __future__ import annotations

import base64
from datetime import datetime

from credits_graphql.service.deps import Deps
from tests.api.documents import (
    ACCOUNT,
    ACCOUNT_TRANSACTIONS,
    ACCOUNTS,
    BALANCE,
    NODE,
    RECHARGE_ATTEMPTS,
    TRANSACTIONS,
    add_funds,
    close_account,
    codes_of,
    create_account,
    get_balance,
    record_usage,
    transactions,
    update_settings,
)
from tests.conftest import Clock, GraphQLClient, Org, make_org

UNKNOWN_ACCOUNT = base64.b64encode(b"Account:999999").decode()


async def _attempt_id(gql: GraphQLClient, account_id: str) -> str:
    await update_settings(gql, account_id, True, "200", "50")
    result = await record_usage(gql, account_id, "60", "drop")
    attempt_id: str = result["triggeredRecharge"]["id"]
    return attempt_id


# node

async def test_node_resolves_accounts_transactions_and_recharge_attempts(gql: GraphQLClient, funded_id: str) -> None:
    entry_id = (await transactions(gql, funded_id))["edges"][0]["node"]["id"]
    attempt_id = await _attempt_id(gql, funded_id)
    assert (await gql(NODE, {"id": funded_id}))["node"] == {"__typename": "Account", "id": funded_id, "name": "Ops"}
    assert (await gql(NODE, {"id": entry_id}))["node"] == {
        "__typename": "Transaction", "id": entry_id, "kind": "FUNDS_ADDED", "amount": {"amount": "100.00"}}
    assert (await gql(NODE, {"id": attempt_id}))["node"] == {
        "__typename": "RechargeAttempt", "id": attempt_id, "status": "PENDING", "amount": {"amount": "200.00"}}


async def test_node_is_null_for_unknown_ids_of_every_type(gql: GraphQLClient, funded_id: str) -> None:
    for type_name in ("Account", "Transaction", "RechargeAttempt", "Organization"):
        unknown = base64.b64encode(f"{type_name}:987654".encode()).decode()
        assert (await gql(NODE, {"id": unknown}))["node"] is None, type_name


async def test_node_is_null_for_another_organizations_objects(gql: GraphQLClient, funded_id: str,
                                                              other_org: Org) -> None:
    entry_id = (await transactions(gql, funded_id))["edges"][0]["node"]["id"]
    attempt_id = await _attempt_id(gql, funded_id)
    for node_id in (funded_id, entry_id, attempt_id):
        assert (await gql(NODE, {"id": node_id}, key=other_org.admin))["node"] is None
        assert (await gql(NODE, {"id": node_id}))["node"] is not None


# account

async def test_account_is_null_when_unknown(gql: GraphQLClient) -> None:
    assert (await gql(ACCOUNT, {"id": UNKNOWN_ACCOUNT}))["account"] is None


async def test_account_reads_back_what_was_created(gql: GraphQLClient, account_id: str) -> None:
    account = (await gql(ACCOUNT, {"id": account_id}))["account"]
    assert (account["id"], account["name"], account["currencyCode"], account["status"]) == (
        account_id, "Ops", "SEK", "ACTIVE")
    assert datetime.fromisoformat(account["createdAt"]).tzinfo is not None


# accounts

async def test_accounts_are_listed_newest_first_in_keyset_pages(gql: GraphQLClient) -> None:
    names = [f"acct-{i}" for i in range(5)]
    for name in names:
        await create_account(gql, name, "SEK", token=None)
    first = (await gql(ACCOUNTS, {"first": 2}))["accounts"]
    assert [e["node"]["name"] for e in first["edges"]] == ["acct-4", "acct-3"]
    assert first["totalCount"] == 5
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    second = (await gql(ACCOUNTS, {"first": 2, "after": first["pageInfo"]["endCursor"]}))["accounts"]
    assert [e["node"]["name"] for e in second["edges"]] == ["acct-2", "acct-1"]
    assert second["totalCount"] == 5
    last = (await gql(ACCOUNTS, {"first": 2, "after": second["pageInfo"]["endCursor"]}))["accounts"]
    assert [e["node"]["name"] for e in last["edges"]] == ["acct-0"]
    assert last["pageInfo"]["hasNextPage"] is False


async def test_accounts_of_one_status_are_paged_and_counted_alone(gql: GraphQLClient) -> None:
    ids = [str((await create_account(gql, f"acct-{i}", "SEK", token=None))["id"]) for i in range(5)]
    for closed in (ids[1], ids[3]):
        await close_account(gql, closed)
    query = """query($status: AccountStatus, $after: String) { accounts(first: 2, status: $status, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { name status } } } }"""
    first = (await gql(query, {"status": "ACTIVE"}))["accounts"]
    assert [e["node"]["name"] for e in first["edges"]] == ["acct-4", "acct-2"]
    assert first["totalCount"] == 3
    rest = (await gql(query, {"status": "ACTIVE", "after": first["pageInfo"]["endCursor"]}))["accounts"]
    assert [e["node"]["name"] for e in rest["edges"]] == ["acct-0"]
    assert rest["pageInfo"]["hasNextPage"] is False
    closed = (await gql(query, {"status": "CLOSED"}))["accounts"]
    assert [(e["node"]["name"], e["node"]["status"]) for e in closed["edges"]] == [("acct-3", "CLOSED"),
                                                                                  ("acct-1", "CLOSED")]
    assert closed["totalCount"] == 2
    assert (await gql(query, {"status": None}))["accounts"]["totalCount"] == 5


async def test_a_cursor_of_another_organization_s_accounts_is_refused(gql: GraphQLClient, deps: Deps) -> None:
    for name in ("a", "b"):
        await create_account(gql, name, "SEK", token=None)
    cursor = (await gql(ACCOUNTS, {"first": 1}))["accounts"]["pageInfo"]["endCursor"]
    other = await make_org(deps, "Globex")
    await create_account(gql.as_key(other.admin), "theirs", "SEK", token=None)
    refused = await gql.post(ACCOUNTS, {"after": cursor}, key=other.admin)
    assert codes_of(refused) == ["BAD_USER_INPUT"]


async def test_accounts_default_to_pages_of_twenty(gql: GraphQLClient) -> None:
    for i in range(21):
        await create_account(gql, f"a{i}", "SEK", token=None)
    page = (await gql(ACCOUNTS))["accounts"]
    assert len(page["edges"]) == 20
    assert page["totalCount"] == 21
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (await gql(ACCOUNTS, {"after": page["pageInfo"]["endCursor"]}))["accounts"]
    assert [e["node"]["name"] for e in rest["edges"]] == ["a0"]


async def test_accounts_of_an_empty_organization_are_an_empty_page(gql: GraphQLClient) -> None:
    page = (await gql(ACCOUNTS))["accounts"]
    assert page == {"totalCount": 0, "edges": [], "pageInfo": {"hasNextPage": False, "hasPreviousPage": False,
                                                                "startCursor": None, "endCursor": None}}


async def test_first_zero_returns_no_edges_but_the_count(gql: GraphQLClient, account_id: str) -> None:
    page = (await gql(ACCOUNTS, {"first": 0}))["accounts"]
    assert page["edges"] == []
    assert page["totalCount"] == 1


async def test_first_one_hundred_is_allowed(gql: GraphQLClient, account_id: str) -> None:
    page = (await gql(ACCOUNTS, {"first": 100}))["accounts"]
    assert [e["node"]["id"] for e in page["edges"]] == [account_id]


# balance

async def test_balance_shows_available_trigger_state_and_time(gql: GraphQLClient, funded_id: str,
                                                              clock: Clock) -> None:
    data = await get_balance(gql, funded_id)
    assert data["account"] == {"id": funded_id}
    assert data["available"] == {"amount": "100.00", "currencyCode": "SEK"}
    assert data["belowTrigger"] is False
    assert data["pendingRecharge"] is None
    # The service's clock (the test's), in the one shape every DateTime has: UTC with microseconds, even at a
    # whole second as here
    assert data["asOf"] == clock.now.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    created = (await gql("query($id: ID!) { account(id: $id) { createdAt } }", {"id": funded_id}))["account"]
    assert created["createdAt"] == data["asOf"]


async def test_balance_is_below_trigger_only_while_auto_recharge_is_active(gql: GraphQLClient,
                                                                           funded_id: str) -> None:
    await record_usage(gql, funded_id, "70", "u")
    assert (await get_balance(gql, funded_id))["belowTrigger"] is False  # auto-recharge is off
    await update_settings(gql, funded_id, True, "200", "50")
    data = await get_balance(gql, funded_id)
    assert data["belowTrigger"] is True
    assert data["pendingRecharge"]["status"] == "PENDING"
    assert data["pendingRecharge"]["amount"] == {"amount": "200.00", "currencyCode": "SEK"}


async def test_balance_of_an_unknown_account_is_null(gql: GraphQLClient) -> None:
    assert (await gql(BALANCE, {"id": UNKNOWN_ACCOUNT}))["balance"] is None


# transactions

async def _ledger(gql: GraphQLClient, account_id: str) -> None:
    """Funds 100 then 50, and six usages of 1..6: eight entries."""
    await add_funds(gql, account_id, "100", "f1")
    await add_funds(gql, account_id, "50", "f2")
    for i in range(1, 7):
        await record_usage(gql, account_id, str(i), f"u{i}")


async def test_transactions_are_newest_first_with_running_balances(gql: GraphQLClient, account_id: str) -> None:
    await _ledger(gql, account_id)
    page = await transactions(gql, account_id)
    amounts = [(e["node"]["amount"]["amount"], e["node"]["balanceAfter"]["amount"]) for e in page["edges"]]
    assert amounts == [("-6.00", "129.00"), ("-5.00", "135.00"), ("-4.00", "140.00"), ("-3.00", "144.00"),
                       ("-2.00", "147.00"), ("-1.00", "149.00"), ("50.00", "150.00"), ("100.00", "100.00")]
    assert page["totalCount"] == 8
    assert page["pageInfo"]["hasNextPage"] is False


async def test_transactions_filtered_by_kind_count_only_matches(gql: GraphQLClient, account_id: str) -> None:
    await _ledger(gql, account_id)
    page = await transactions(gql, account_id, kinds=["FUNDS_ADDED"], first=1)
    assert [e["node"]["amount"]["amount"] for e in page["edges"]] == ["50.00"]
    assert page["totalCount"] == 2
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await transactions(gql, account_id, kinds=["FUNDS_ADDED"], after=page["pageInfo"]["endCursor"])
    assert [e["node"]["amount"]["amount"] for e in rest["edges"]] == ["100.00"]
    both = await transactions(gql, account_id, kinds=["USAGE", "AUTO_RECHARGE"])
    assert both["totalCount"] == 6
    assert {e["node"]["kind"] for e in both["edges"]} == {"USAGE"}
    none = await transactions(gql, account_id, kinds=["AUTO_RECHARGE"])
    assert (none["totalCount"], none["edges"]) == (0, [])


async def test_transaction_pages_are_stable_while_new_entries_are_appended(gql: GraphQLClient,
                                                                           account_id: str) -> None:
    await _ledger(gql, account_id)
    first = await transactions(gql, account_id, first=3)
    await record_usage(gql, account_id, "0.5", "between-1")
    await record_usage(gql, account_id, "0.25", "between-2")
    second = await transactions(gql, account_id, first=3, after=first["pageInfo"]["endCursor"])
    third = await transactions(gql, account_id, first=3, after=second["pageInfo"]["endCursor"])
    seen = [e["node"]["amount"]["amount"] for page in (first, second, third) for e in page["edges"]]
    assert seen == ["-6.00", "-5.00", "-4.00", "-3.00", "-2.00", "-1.00", "50.00", "100.00"]
    assert third["pageInfo"]["hasNextPage"] is False
    assert second["totalCount"] == 10
    assert second["pageInfo"]["hasPreviousPage"] is True


async def test_account_transactions_page_like_the_transactions_query(gql: GraphQLClient, account_id: str) -> None:
    await _ledger(gql, account_id)
    nested = (await gql(ACCOUNT_TRANSACTIONS, {"id": account_id, "first": 4, "kinds": ["USAGE"]}))
    top = await transactions(gql, account_id, first=4, kinds=["USAGE"])
    assert nested["account"]["transactions"] == top
    assert top["totalCount"] == 6
    after = (await gql(ACCOUNT_TRANSACTIONS, {"id": account_id, "after": top["pageInfo"]["endCursor"],
                                              "kinds": ["USAGE"]}))["account"]["transactions"]
    assert [e["node"]["amount"]["amount"] for e in after["edges"]] == ["-2.00", "-1.00"]


async def test_transactions_of_an_unknown_account_are_null(gql: GraphQLClient) -> None:
    assert (await gql(TRANSACTIONS, {"id": UNKNOWN_ACCOUNT}))["transactions"] is None


async def test_transactions_default_to_pages_of_twenty(gql: GraphQLClient, funded_id: str) -> None:
    for i in range(20):
        await record_usage(gql, funded_id, "1", f"u{i}")
    page = await transactions(gql, funded_id)
    assert len(page["edges"]) == 20
    assert page["totalCount"] == 21
    assert page["pageInfo"]["hasNextPage"] is True


async def test_transaction_account_points_back_to_its_account(gql: GraphQLClient, funded_id: str) -> None:
    data = await gql("""query($id: ID!) { transactions(accountId: $id) { edges { node { account { id name } } } } }""",
                     {"id": funded_id})
    assert data["transactions"]["edges"][0]["node"]["account"] == {"id": funded_id, "name": "Ops"}


# rechargeAttempts

async def test_recharge_attempts_of_an_account_without_auto_recharge_are_empty(gql: GraphQLClient,
                                                                               funded_id: str) -> None:
    data = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id}))["account"]["rechargeAttempts"]
    assert data == {"totalCount": 0, "edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}


async def test_recharge_attempts_list_the_pending_attempt(gql: GraphQLClient, funded_id: str) -> None:
    attempt_id = await _attempt_id(gql, funded_id)
    data = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id}))["account"]["rechargeAttempts"]
    assert data["totalCount"] == 1
    node = data["edges"][0]["node"]
    assert (node["id"], node["status"], node["amount"], node["failureReason"], node["transaction"]) == (
        attempt_id, "PENDING", {"amount": "200.00", "currencyCode": "SEK"}, None, None)


async def test_every_timestamp_carries_an_offset(gql: GraphQLClient, funded_id: str, ) -> None:
    await update_settings(gql, funded_id, True, "200", "50")
    await record_usage(gql, funded_id, "60", "drop")
    account = (await gql(ACCOUNT, {"id": funded_id}))["account"]
    entries = await transactions(gql, funded_id)
    attempt = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id}))["account"]["rechargeAttempts"]["edges"][0]["node"]
    stamps = [account["createdAt"], account["balance"]["asOf"], account["rechargeSettings"]["updatedAt"],
              account["paymentMethod"]["updatedAt"], attempt["createdAt"]]
    stamps += [e["node"][field] for e in entries["edges"] for field in ("occurredAt", "createdAt")]
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).tzinfo is not None, stamp
