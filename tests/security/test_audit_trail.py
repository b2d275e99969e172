"""The audit trail: every money or settings mutation leaves an event (who, what, when, outcome) that
ADMINs of the same organization read, newest first, and that the database refuses to change."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from credits_graphql.api.ids import decode_id
from credits_graphql.bootstrap import Runtime
from credits_graphql.domain.access import Role
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import funds_recovery, ledger
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import ChargeResult
from tests.api.documents import usage_and_funds
from tests.conftest import Clock, GraphQLClient, Org, make_org
from tests.security.conftest import key_id
from tests.service.support import GRACE_PASSED
from tests.service.test_funds_intents import DyingGateway, ProcessDied

AUDIT = """query($first: Int, $after: String) { auditEvents(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  edges { node { id apiKeyId operation accountId input { name value } outcome errorCodes occurredAt } } } }"""
CREATE = """mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { account { id } userErrors { code } } }"""
ADD_FUNDS = """mutation($id: ID!, $amount: Decimal!) {
  addFunds(input: {accountId: $id, amount: $amount, idempotencyKey: "inv-1"}) {
    transaction { id } userErrors { code } } }"""
RECHARGE = """mutation($id: ID!) { updateRechargeSettings(input: {accountId: $id, enabled: true, rechargeAmount: "50",
  triggerBalance: "20"}) { account { id } userErrors { code } } }"""
PAYMENT = """mutation($id: ID!) {
  updatePaymentMethod(input: {accountId: $id, paymentMethod: {token: "tok_mastercard"}}) {
  account { id } userErrors { code } } }"""
USAGE = """mutation($id: ID!) { recordUsage(input: {accountId: $id, service: TOLL_FREE, amount: "1.25", minutes: 3,
  reference: "call-42", idempotencyKey: "u-1", occurredAt: "2026-11-25T15:03:00+01:00"}) {
  transaction { id } userErrors { code } } }"""
CLOSE = """mutation($id: ID!) { closeAccount(input: {accountId: $id}) { account { id } userErrors { code } } }"""


async def _events(gql: GraphQLClient, **variables: Any) -> list[dict[str, Any]]:
    return [edge["node"] for edge in (await gql(AUDIT, variables))["auditEvents"]["edges"]]


async def _funded_account(gql: GraphQLClient) -> str:
    """An account paid by card, created and funded with 100 (two audited mutations); returns its id."""
    card = {"token": "tok_visa"}
    created = await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK", "paymentMethod": card}})
    account_id: str = created["createAccount"]["account"]["id"]
    await gql(ADD_FUNDS, {"id": account_id, "amount": "100"})
    return account_id


async def test_each_money_or_settings_mutation_is_recorded_with_who_what_and_outcome(
        gql: GraphQLClient, deps: Deps, org: Org) -> None:
    account_id = await _funded_account(gql)
    await gql(RECHARGE, {"id": account_id})
    await gql(PAYMENT, {"id": account_id})
    await gql(USAGE, {"id": account_id}, key=org.usage_writer)
    await gql(CLOSE, {"id": account_id})

    response = await gql.post(AUDIT, {"first": 10})
    assert "tok_" not in response.text  # payment tokens are never recorded
    events = [edge["node"] for edge in response.json()["data"]["auditEvents"]["edges"]]
    admin, writer = str(await key_id(deps, org.id, Role.ADMIN)), str(await key_id(deps, org.id, Role.USAGE_WRITER))
    assert [(e["operation"], e["apiKeyId"], e["accountId"], e["outcome"], e["errorCodes"]) for e in events] == [
        ("closeAccount", admin, account_id, "OK", []),
        ("recordUsage", writer, account_id, "OK", []),
        ("updatePaymentMethod", admin, account_id, "OK", []),
        ("updateRechargeSettings", admin, account_id, "OK", []),
        ("addFunds", admin, account_id, "OK", []),
        ("createAccount", admin, account_id, "OK", []),
    ]
    inputs = {e["operation"]: {field["name"]: field["value"] for field in e["input"]} for e in events}
    assert inputs["createAccount"] == {"name": "Ops", "currencyCode": "SEK", "paymentMethod": "[redacted]"}
    assert inputs["addFunds"] == {"amount": "100", "idempotencyKey": "inv-1"}
    assert inputs["updatePaymentMethod"] == {"paymentMethod": "[redacted]"}
    assert inputs["recordUsage"] == {"service": "TOLL_FREE", "amount": "1.25", "idempotencyKey": "u-1",
                                     "minutes": "3", "reference": "call-42",
                                     "occurredAt": "2026-11-25T14:03:00.000000+00:00"}  # as DateTime answers it
    assert all(e["occurredAt"] for e in events)


async def test_refused_and_forbidden_mutations_are_recorded_with_their_codes(gql: GraphQLClient, deps: Deps,
                                                                            org: Org) -> None:
    created = await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK"}})
    account_id = created["createAccount"]["account"]["id"]
    refused = await gql(USAGE, {"id": account_id}, key=org.usage_writer)
    assert refused["recordUsage"]["userErrors"] == [{"code": "INSUFFICIENT_FUNDS"}]
    forbidden = await gql.post(ADD_FUNDS, {"id": account_id, "amount": "100"}, key=org.reader)
    assert forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    malformed = await gql.post(CLOSE, {"id": "not-an-id"})
    assert malformed.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    events = await _events(gql, first=3)
    reader = str(await key_id(deps, org.id, Role.READER))
    assert [(e["operation"], e["outcome"], e["errorCodes"]) for e in events] == [
        ("closeAccount", "ERROR", ["BAD_USER_INPUT"]),
        ("addFunds", "ERROR", ["FORBIDDEN"]),
        ("recordUsage", "USER_ERROR", ["INSUFFICIENT_FUNDS"]),
    ]
    assert events[1]["apiKeyId"] == reader
    assert events[0]["accountId"] is None


async def test_a_mutation_document_refused_before_it_runs_is_recorded_for_the_field_at_fault(
        gql: GraphQLClient, deps: Deps, org: Org) -> None:
    account_id = await _funded_account(gql)
    mixed = usage_and_funds(account_id, "1")
    refused = await gql.post(mixed, key=org.usage_writer)
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    malformed = mixed.replace(f'accountId: "{account_id}", amount: "50"', 'accountId: "QWNjb3VudDowMQ==", amount: "50"')
    refused = await gql.post(malformed)
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    events = await _events(gql, first=2)
    assert [(e["operation"], e["outcome"], e["errorCodes"]) for e in events] == [
        ("addFunds", "ERROR", ["BAD_USER_INPUT"]),
        ("addFunds", "ERROR", ["FORBIDDEN"]),
    ]
    assert events[1]["apiKeyId"] == str(await key_id(deps, org.id, Role.USAGE_WRITER))
    assert events[1]["accountId"] == account_id
    assert {field["name"]: field["value"] for field in events[1]["input"]} == {"amount": "50", "idempotencyKey": "m2"}
    assert events[0]["accountId"] is None
    # Neither document ran its recordUsage: the newest before them is the funding of the account.
    assert (await _events(gql, first=3))[2]["operation"] == "addFunds"
    assert (await _events(gql, first=3))[2]["outcome"] == "OK"


@pytest.mark.parametrize("payload", ["transactions(first: 500) { totalCount }",
                                     'transactions(after: "bad") { totalCount }'])
async def test_a_forbidden_mutation_with_a_bad_page_argument_is_refused_and_recorded_as_forbidden(
        gql: GraphQLClient, org: Org, payload: str) -> None:
    account_id = await _funded_account(gql)
    document = ('mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "10", idempotencyKey: "x"}) '
                f"{{ account {{ {payload} }} }} }}")
    refused = await gql.post(document, {"id": account_id}, key=org.reader)
    assert [error["extensions"]["code"] for error in refused.json()["errors"]] == ["FORBIDDEN"]
    [event] = await _events(gql, first=1)
    assert (event["operation"], event["outcome"], event["errorCodes"]) == ("addFunds", "ERROR", ["FORBIDDEN"])
    balance = await gql('query($id: ID!) { account(id: $id) { balance { available { amount } } } }', {"id": account_id})
    assert balance["account"]["balance"]["available"]["amount"] == "100.00"


async def test_only_admins_read_the_audit_trail_and_only_their_organizations(
        gql: GraphQLClient, deps: Deps, org: Org) -> None:
    await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK"}})
    for key in (org.reader, org.usage_writer):
        response = await gql.post(AUDIT, key=key)
        assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert response.json()["data"] == {"auditEvents": None}
    # A dashboard asking for accounts and the audit trail in one query still gets its accounts with a READER key.
    dashboard = "{ accounts { totalCount } auditEvents { totalCount } }"
    response = await gql.post(dashboard, key=org.reader)
    assert [error["path"] for error in response.json()["errors"]] == [["auditEvents"]]
    assert response.json()["data"] == {"accounts": {"totalCount": 1}, "auditEvents": None}
    other = await make_org(deps, "Globex")
    assert (await gql(AUDIT, key=other.admin))["auditEvents"] == {
        "totalCount": 0, "pageInfo": {"hasNextPage": False, "endCursor": None}, "edges": []}
    event_id = (await _events(gql))[0]["id"]
    node = """query($id: ID!) { node(id: $id) { ... on AuditEvent { operation } } }"""
    assert (await gql(node, {"id": event_id}))["node"] == {"operation": "createAccount"}
    assert (await gql(node, {"id": event_id}, key=other.admin))["node"] is None
    assert (await gql(node, {"id": event_id}, key=org.reader))["node"] is None


async def test_the_audit_trail_pages_newest_first_with_stable_cursors(gql: GraphQLClient) -> None:
    for name in ("a", "b", "c", "d", "e"):
        await gql(CREATE, {"input": {"name": name, "currencyCode": "SEK"}})
    first = (await gql(AUDIT, {"first": 2}))["auditEvents"]
    assert first["totalCount"] == 5
    assert first["pageInfo"]["hasNextPage"]
    await gql(CREATE, {"input": {"name": "f", "currencyCode": "SEK"}})  # appended meanwhile: pages stay put
    rest = (await gql(AUDIT, {"first": 10, "after": first["pageInfo"]["endCursor"]}))["auditEvents"]
    names = [next(f["value"] for f in edge["node"]["input"] if f["name"] == "name")
             for page in (first, rest) for edge in page["edges"]]
    assert names == ["e", "d", "c", "b", "a"]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_the_database_refuses_to_change_or_remove_an_audit_event(gql: GraphQLClient, runtime: Runtime) -> None:
    await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK"}})
    for statement in ("UPDATE audit_events SET outcome = 'OK', error_codes = ''", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"):
            async with runtime.engine.begin() as connection:
                await connection.execute(text(statement))
    assert (await gql(AUDIT))["auditEvents"]["totalCount"] == 1


_REFUSE_AUDIT = {
    "sqlite": ["CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit down'); END"],
    "postgresql": ["CREATE OR REPLACE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'audit down'; END $$",
                   "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events FOR EACH ROW "
                   "EXECUTE FUNCTION audit_down()"],
}


STATE = """query($id: ID!) { account(id: $id) { status balance { available { amount } } transactions { totalCount }
  rechargeSettings { status rechargeAmount { amount } } paymentMethod { brand } } }"""
MORE_FUNDS = """mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "50", idempotencyKey: "inv-2"}) {
  transaction { id } userErrors { code } } }"""


CHANGES = {"recordUsage": USAGE, "addFunds": MORE_FUNDS, "updateRechargeSettings": RECHARGE,
           "updatePaymentMethod": PAYMENT, "closeAccount": CLOSE}


@pytest.mark.parametrize("operation", CHANGES)
async def test_a_change_and_its_audit_event_commit_together_or_not_at_all(
        gql: GraphQLClient, runtime: Runtime, org: Org, gateway: SandboxGateway, operation: str) -> None:
    account_id = await _funded_account(gql)
    document, key = CHANGES[operation], org.usage_writer if operation == "recordUsage" else org.admin
    before = await gql(STATE, {"id": account_id})
    dialect = runtime.engine.dialect.name
    async with runtime.engine.begin() as connection:
        for statement in _REFUSE_AUDIT[dialect]:
            await connection.execute(text(statement))

    refused = await gql.post(document, {"id": account_id}, key=key)

    assert refused.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert await gql(STATE, {"id": account_id}) == before  # no change without its event
    async with runtime.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER audit_down" + (" ON audit_events" if dialect == "postgresql"
                                                                   else "")))
    retried = await gql.post(document, {"id": account_id}, key=key)  # the client retries
    assert retried.json()["data"][operation]["userErrors"] == []
    assert await gql(STATE, {"id": account_id}) != before
    events = [e for e in await _events(gql, first=10) if e["operation"] == operation]
    # The refused call's own ERROR event could not be written either while events were refused (it is logged).
    assert [(e["outcome"], e["errorCodes"]) for e in events] == [("OK", [])] * (1 + (operation == "addFunds"))
    assert len(gateway.charges) == 1 + (operation == "addFunds")  # a refused addFunds's charge, once: its retry's


BATCH = """mutation($items: [RecordUsageInput!]!) {
  recordUsageBatch(input: {items: $items}) { results { userErrors { code } } } }"""


@pytest.mark.parametrize("document", ["usage", "batch"])
async def test_a_forbidden_usage_report_is_recorded_once_and_never_as_ok(
        gql: GraphQLClient, org: Org, document: str) -> None:
    account_id = await _funded_account(gql)
    item = {"accountId": account_id, "service": "TOLL_FREE", "amount": "1", "idempotencyKey": "x"}
    forbidden = (await gql.post(USAGE, {"id": account_id}, key=org.reader) if document == "usage"
                 else await gql.post(BATCH, {"items": [item]}, key=org.reader))
    assert forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    events = await _events(gql, first=3)
    operation = "recordUsage" if document == "usage" else "recordUsageBatch"
    assert [(e["operation"], e["outcome"], e["errorCodes"]) for e in events[:2]] == [
        (operation, "ERROR", ["FORBIDDEN"]), ("addFunds", "OK", [])]


async def test_a_document_naming_a_forbidden_mutation_many_times_is_recorded_once_with_its_declared_input(
        gql: GraphQLClient, org: Org) -> None:
    account_id = await _funded_account(gql)
    document = "mutation($i: AddFundsInput!) { " + " ".join(
        ["addFunds(input: $i) { __typename }"] * 10) + " }"
    stuffed = {"accountId": account_id, "amount": "10", "idempotencyKey": "x",
               **{f"filler{n}": "x" * 1000 for n in range(20)}}  # not fields of AddFundsInput
    forbidden = await gql.post(document, {"i": stuffed}, key=org.reader)
    assert forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    events = await _events(gql, first=10)
    assert [(e["operation"], e["outcome"]) for e in events[:2]] == [("addFunds", "ERROR"), ("addFunds", "OK")]
    assert {field["name"]: field["value"] for field in events[0]["input"]} == {"amount": "10", "idempotencyKey": "x"}


async def test_a_cursor_of_another_organization_s_audit_trail_is_refused(gql: GraphQLClient, deps: Deps) -> None:
    for name in ("a", "b"):
        await gql(CREATE, {"input": {"name": name, "currencyCode": "SEK"}})
    cursor = (await gql(AUDIT, {"first": 1}))["auditEvents"]["pageInfo"]["endCursor"]
    other = await make_org(deps, "Globex")
    refused = await gql.post(AUDIT, {"after": cursor}, key=other.admin)
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


BATCH_RESULTS = """mutation($items: [RecordUsageInput!]!) {
  recordUsageBatch(input: {items: $items}) { results { transaction { id } userErrors { code } } } }"""


@pytest.mark.parametrize("refused_before_the_transaction", [False, True])
async def test_a_batch_with_refused_items_is_one_user_error_event_with_their_codes(
        gql: GraphQLClient, org: Org, refused_before_the_transaction: bool) -> None:
    """The trail shows that usage was refused, as it does for a refused recordUsage; the items recorded are in the
    ledger. Items refused by the checks that need no account never reach a transaction: the same event then."""
    account_id = await _funded_account(gql)
    transaction_id = (await gql(AUDIT, {"first": 1}))["auditEvents"]["edges"][0]["node"]["id"]  # not an Account

    def item(key: str, amount: str = "1", **overrides: str) -> dict[str, str]:
        return {"accountId": account_id, "service": "TOLL_FREE", "amount": amount, "idempotencyKey": key, **overrides}

    items = ([item("a", reference="r" * 300), item("b", reference="r" * 300)] if refused_before_the_transaction else
             [item("a"), item("b", "0.0000001"), item("c", "1000"), item("d", accountId=transaction_id),
              item("e", "1000"), item("f")])
    results = (await gql(BATCH_RESULTS, {"items": items}, key=org.usage_writer))["recordUsageBatch"]["results"]
    codes = [[error["code"] for error in result["userErrors"]] for result in results]
    events = await _events(gql, first=3)
    if refused_before_the_transaction:
        assert codes == [["INVALID_INPUT"], ["INVALID_INPUT"]]
        expected = ["INVALID_INPUT"]
    else:
        assert codes == [[], ["INVALID_AMOUNT"], ["INSUFFICIENT_FUNDS"], ["ACCOUNT_NOT_FOUND"],
                         ["INSUFFICIENT_FUNDS"], []]
        expected = ["INVALID_AMOUNT", "INSUFFICIENT_FUNDS", "ACCOUNT_NOT_FOUND"]  # each once, in the items' order
    assert [(e["operation"], e["outcome"], e["errorCodes"]) for e in events[:2]] == [
        ("recordUsageBatch", "USER_ERROR", expected), ("addFunds", "OK", [])]


async def test_a_batch_whose_items_are_all_recorded_is_one_ok_event(gql: GraphQLClient, org: Org) -> None:
    account_id = await _funded_account(gql)
    items = [{"accountId": account_id, "service": "TOLL_FREE", "amount": "1", "idempotencyKey": key} for key in "ab"]
    await gql(BATCH_RESULTS, {"items": items}, key=org.usage_writer)
    events = await _events(gql, first=3)
    assert [(e["operation"], e["outcome"], e["errorCodes"]) for e in events[:2]] == [
        ("recordUsageBatch", "OK", []), ("addFunds", "OK", [])]
    assert {field["name"]: field["value"] for field in events[0]["input"]} == {"items": "2"}


async def test_an_add_funds_whose_request_died_is_recorded_in_its_key_s_name_by_the_worker_that_credits_it(
        gql: GraphQLClient, deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    card = {"token": "tok_visa"}
    created = await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK", "paymentMethod": card}})
    account_id = created["createAccount"]["account"]["id"]
    admin = await key_id(deps, org.id, Role.ADMIN)
    decoded = decode_id(account_id, "Account")
    assert decoded is not None
    request = ledger.AddFunds(account_id=decoded[1], amount=Decimal("25"), idempotency_key="inv-7", api_key_id=admin)
    with pytest.raises(ProcessDied):  # killed once the card was charged: the request records nothing
        await ledger.add_funds(replace(deps, gateway=DyingGateway(gateway)), org.id, request)
    assert [e["operation"] for e in await _events(gql)] == ["createAccount"]

    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 1  # the worker credits the charge in the request's stead

    credited, _ = await _events(gql)
    assert (credited["operation"], credited["apiKeyId"], credited["accountId"], credited["outcome"]) == (
        "addFunds", str(admin), account_id, "OK")
    assert {field["name"]: field["value"] for field in credited["input"]} == {"amount": "25.00",
                                                                             "idempotencyKey": "inv-7"}
    assert await funds_recovery.run_stale(deps) == 0
    assert len(await _events(gql)) == 2  # recorded once


async def test_an_add_funds_slower_than_the_grace_and_credited_by_the_worker_is_one_audit_event(
        gql: GraphQLClient, gateway: SandboxGateway, deps: Deps, clock: Clock) -> None:
    card = {"token": "tok_visa"}
    created = await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK", "paymentMethod": card}})
    account_id = created["createAccount"]["account"]["id"]
    charge, reached, go_on = gateway.charge, asyncio.Event(), asyncio.Event()

    async def the_request_s_call_answers_after_the_grace(*args: Any) -> ChargeResult:
        if not reached.is_set():
            reached.set()
            await go_on.wait()
        return await charge(*args)

    gateway.charge = the_request_s_call_answers_after_the_grace  # type: ignore[method-assign]
    request = asyncio.create_task(gql.post(ADD_FUNDS, {"id": account_id, "amount": "25"}))
    await reached.wait()
    clock.advance(seconds=GRACE_PASSED)
    assert await funds_recovery.run_stale(deps) == 1  # the worker charges with the same key, and credits
    go_on.set()
    answer = (await request).json()
    assert answer["data"]["addFunds"]["userErrors"] == [], answer

    assert len(gateway.charges) == 1
    assert [e["operation"] for e in await _events(gql)] == ["addFunds", "createAccount"]  # one call, one event
