from __future__ import annotations

from tests.conftest import GraphQLClient

CREATE = """
mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { account { id name currencyCode balance { available { amount currencyCode } } }
                                 userErrors { field message code } }
}"""


async def test_account_lifecycle_through_the_api(gql: GraphQLClient) -> None:
    data = await gql(CREATE, {"input": {"name": "Ops", "currencyCode": "SEK", "paymentMethod": {"token": "tok_visa"}}})
    account = data["createAccount"]["account"]
    assert account["balance"]["available"] == {"amount": "0.00", "currencyCode": "SEK"}
    funds = await gql("""mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "100", idempotencyKey: "k1"}) {
        transaction { amount { amount } balanceAfter { amount } kind } userErrors { code message } } }""",
                      {"id": account["id"]})
    assert funds["addFunds"]["transaction"] == {"amount": {"amount": "100.00"}, "balanceAfter": {"amount": "100.00"},
                                                "kind": "FUNDS_ADDED"}
    usage = await gql("""mutation($id: ID!) { recordUsage(input: {accountId: $id, service: TOLL_FREE,
        amount: "0.0125",
        idempotencyKey: "u1", minutes: 3}) { transaction { amount { amount } balanceAfter { amount } service minutes }
        userErrors { code } } }""", {"id": account["id"]})
    assert usage["recordUsage"]["transaction"] == {
        "amount": {"amount": "-0.0125"}, "balanceAfter": {"amount": "99.9875"}, "service": "TOLL_FREE", "minutes": 3}
    page = await gql("""query($id: ID!) { account(id: $id) { transactions { totalCount edges { node { kind } } } } }""",
                     {"id": account["id"]})
    assert page["account"]["transactions"]["totalCount"] == 2
    assert [e["node"]["kind"] for e in page["account"]["transactions"]["edges"]] == ["USAGE", "FUNDS_ADDED"]
