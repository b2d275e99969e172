"""GraphQL documents and small helpers shared by the API tests. Everything goes through HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import GraphQLClient

USER_ERRORS = "userErrors { field message code }"
ACCOUNT_FIELDS = """id name currencyCode status createdAt
  balance { available { amount currencyCode } belowTrigger pendingRecharge { id status amount { amount } } asOf }
  rechargeSettings { status rechargeAmount { amount currencyCode } triggerBalance { amount currencyCode } updatedAt }
  paymentMethod { brand last4 updatedAt }"""
TRANSACTION_FIELDS = """id kind amount { amount currencyCode } balanceAfter { amount currencyCode } service minutes
  reference occurredAt createdAt"""
ATTEMPT_FIELDS = """id status cancelled amount { amount currencyCode } failureReason createdAt
  transaction { id kind amount { amount } }"""
BALANCE_OF_ACCOUNT = "account { id balance { available { amount } } }"

CREATE_ACCOUNT = f"""
mutation($input: CreateAccountInput!) {{
  createAccount(input: $input) {{ account {{ {ACCOUNT_FIELDS} }} {USER_ERRORS} }}
}}"""

ADD_FUNDS = f"""
mutation($input: AddFundsInput!) {{
  addFunds(input: $input) {{ transaction {{ {TRANSACTION_FIELDS} }} {BALANCE_OF_ACCOUNT} {USER_ERRORS} }}
}}"""

UPDATE_SETTINGS = f"""
mutation($input: UpdateRechargeSettingsInput!) {{
  updateRechargeSettings(input: $input) {{ account {{ {ACCOUNT_FIELDS} }} {USER_ERRORS} }}
}}"""

UPDATE_PAYMENT_METHOD = f"""
mutation($input: UpdatePaymentMethodInput!) {{
  updatePaymentMethod(input: $input) {{ account {{ {ACCOUNT_FIELDS} }} {USER_ERRORS} }}
}}"""

RECORD_USAGE = f"""
mutation($input: RecordUsageInput!) {{
  recordUsage(input: $input) {{ transaction {{ {TRANSACTION_FIELDS} }} {BALANCE_OF_ACCOUNT}
                              triggeredRecharge {{ {ATTEMPT_FIELDS} }} {USER_ERRORS} }}
}}"""

CLOSE_ACCOUNT = f"""
mutation($input: CloseAccountInput!) {{
  closeAccount(input: $input) {{ account {{ id status }} {USER_ERRORS} }}
}}"""

ACCOUNT = f"query($id: ID!) {{ account(id: $id) {{ {ACCOUNT_FIELDS} }} }}"

BALANCE = """query($id: ID!) { balance(accountId: $id) {
  account { id } available { amount currencyCode } belowTrigger asOf
  pendingRecharge { id status amount { amount currencyCode } failureReason } } }"""

TRANSACTIONS = f"""
query($id: ID!, $first: Int, $after: String, $kinds: [TransactionKind!]) {{
  transactions(accountId: $id, first: $first, after: $after, kinds: $kinds) {{
    totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {TRANSACTION_FIELDS} }} }} }}
}}"""

ACCOUNT_TRANSACTIONS = f"""
query($id: ID!, $first: Int, $after: String, $kinds: [TransactionKind!]) {{
  account(id: $id) {{ transactions(first: $first, after: $after, kinds: $kinds) {{
    totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {TRANSACTION_FIELDS} }} }} }} }}
}}"""

ACCOUNTS = """
query($first: Int, $after: String) {
  accounts(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id name } } }
}"""

RECHARGE_ATTEMPTS = f"""
query($id: ID!, $first: Int, $after: String) {{
  account(id: $id) {{ rechargeSettings {{ status }} rechargeAttempts(first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }}
    edges {{ cursor node {{ {ATTEMPT_FIELDS} }} }} }} }}
}}"""

NODE = """query($id: ID!) { node(id: $id) {
  __typename id
  ... on Account { name }
  ... on Transaction { kind amount { amount } }
  ... on RechargeAttempt { status amount { amount } }
} }"""


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert "errors" in body, body
    errors: list[dict[str, Any]] = body["errors"]
    return errors


def codes_of(response: httpx.Response) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in errors_of(response)]


async def create_account(gql: GraphQLClient, name: str = "Ops", currency: str = "SEK",
                         token: str | None = "tok_visa") -> dict[str, Any]:
    payload: dict[str, Any] = {"name": name, "currencyCode": currency}
    if token is not None:
        payload["paymentMethod"] = {"token": token}
    result = (await gql(CREATE_ACCOUNT, {"input": payload}))["createAccount"]
    assert result["userErrors"] == [], result
    account: dict[str, Any] = result["account"]
    return account


async def add_funds(gql: GraphQLClient, account_id: str, amount: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(ADD_FUNDS, {"input": {"accountId": account_id, "amount": amount,
                                                              "idempotencyKey": key}}))["addFunds"]
    return result


async def record_usage(gql: GraphQLClient, account_id: str, amount: str, key: str, service: str = "DOMESTIC_CALLING",
                       **extra: Any) -> dict[str, Any]:
    variables = {"input": {"accountId": account_id, "amount": amount, "idempotencyKey": key, "service": service,
                           **extra}}
    result: dict[str, Any] = (await gql(RECORD_USAGE, variables))["recordUsage"]
    return result


async def update_settings(gql: GraphQLClient, account_id: str, enabled: bool, recharge_amount: str | None = None,
                          trigger_balance: str | None = None) -> dict[str, Any]:
    variables = {"input": {"accountId": account_id, "enabled": enabled, "rechargeAmount": recharge_amount,
                           "triggerBalance": trigger_balance}}
    result: dict[str, Any] = (await gql(UPDATE_SETTINGS, variables))["updateRechargeSettings"]
    return result


async def update_payment_method(gql: GraphQLClient, account_id: str, token: str) -> dict[str, Any]:
    variables = {"input": {"accountId": account_id, "paymentMethod": {"token": token}}}
    result: dict[str, Any] = (await gql(UPDATE_PAYMENT_METHOD, variables))["updatePaymentMethod"]
    return result


async def close_account(gql: GraphQLClient, account_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(CLOSE_ACCOUNT, {"input": {"accountId": account_id}}))["closeAccount"]
    return result


async def balance(gql: GraphQLClient, account_id: str) -> str:
    data = await gql(BALANCE, {"id": account_id})
    amount: str = data["balance"]["available"]["amount"]
    return amount


async def get_balance(gql: GraphQLClient, account_id: str) -> dict[str, Any]:
    data: dict[str, Any] = (await gql(BALANCE, {"id": account_id}))["balance"]
    return data


def usage_and_funds(account_id: str, used: str) -> str:
    """One mutation document of two fields: `used`, a recordUsage of `used` (allowed to USAGE_WRITER keys), and
    `funded`, an addFunds of 50 (not allowed to them)."""
    return f"""mutation {{
      used: recordUsage(input: {{accountId: "{account_id}", service: TOLL_FREE, amount: "{used}",
                                 idempotencyKey: "m1"}}) {{ transaction {{ id }} }}
      funded: addFunds(input: {{accountId: "{account_id}", amount: "50", idempotencyKey: "m2"}})
        {{ transaction {{ id }} }}
    }}"""

async def get_account(gql: GraphQLClient, account_id: str) -> dict[str, Any]:
    account: dict[str, Any] = (await gql(ACCOUNT, {"id": account_id}))["account"]
    return account


async def transactions(gql: GraphQLClient, account_id: str, **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = (await gql(TRANSACTIONS, {"id": account_id, **args}))["transactions"]
    return page


async def history(gql: GraphQLClient, account_id: str) -> list[tuple[str, str]]:
    """(kind, amount) of every entry, newest first."""
    page = await transactions(gql, account_id, first=100)
    return [(edge["node"]["kind"], edge["node"]["amount"]["amount"]) for edge in page["edges"]]


async def attempts(gql: GraphQLClient, account_id: str) -> list[dict[str, Any]]:
    data = await gql(RECHARGE_ATTEMPTS, {"id": account_id, "first": 100})
    return [edge["node"] for edge in data["account"]["rechargeAttempts"]["edges"]]


def user_error(payload: dict[str, Any]) -> tuple[str, list[str] | None]:
    """The (code, field) of the one userError of a payload."""
    assert len(payload["userErrors"]) == 1, payload
    error = payload["userErrors"][0]
    assert error["message"], error
    return error["code"], error["field"]
