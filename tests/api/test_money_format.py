"""Money on the wire: plain decimal strings with at least the currency's minor digits; inputs compare as numbers."""

from __future__ import annotations

import random
import re
from decimal import Decimal

from tests.api.documents import (
    CREATE_ACCOUNT,
    add_funds,
    create_account,
    get_balance,
    history,
    record_usage,
    user_error,
)
from tests.conftest import GraphQLClient

PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")


SHOWN = [("0.0125", "-0.0125", "99.9875"), ("1.5", "-1.50", "98.4875"), ("2", "-2.00", "96.4875"),
         ("1.500000", "-1.50", "94.9875"), ("0.000001", "-0.000001", "94.987499"), ("0010.10", "-10.10", "84.887499"),
         ("0.012501", "-0.012501", "84.874998"), ("0.874998", "-0.874998", "84.00")]


async def test_usage_amounts_are_shown_with_at_least_two_decimals_and_no_more_than_needed(
        gql: GraphQLClient, funded_id: str) -> None:
    for index, (usage, shown, after) in enumerate(SHOWN):
        result = await record_usage(gql, funded_id, usage, f"u{index}")
        assert result["transaction"]["amount"] == {"amount": shown, "currencyCode": "SEK"}
        assert result["transaction"]["balanceAfter"] == {"amount": after, "currencyCode": "SEK"}
    assert (await get_balance(gql, funded_id))["available"]["amount"] == "84.00"


async def test_funds_are_shown_with_the_currency_minor_digits(gql: GraphQLClient, account_id: str) -> None:
    result = await add_funds(gql, account_id, "10", "k")
    assert result["transaction"]["amount"]["amount"] == "10.00"
    assert (await get_balance(gql, account_id))["available"] == {"amount": "10.00", "currencyCode": "SEK"}


async def test_yen_amounts_have_no_decimals_unless_usage_needs_them(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Tokyo", "JPY")
    funds = await add_funds(gql, account["id"], "1500", "k")
    assert funds["transaction"]["amount"] == {"amount": "1500", "currencyCode": "JPY"}
    usage = await record_usage(gql, account["id"], "0.5", "u")
    assert usage["transaction"]["amount"]["amount"] == "-0.5"
    assert usage["transaction"]["balanceAfter"]["amount"] == "1499.5"
    await record_usage(gql, account["id"], "499.5", "u2")
    assert (await get_balance(gql, account["id"]))["available"] == {"amount": "1000", "currencyCode": "JPY"}


async def test_an_unsupported_currency_is_refused_with_the_ones_supported(gql: GraphQLClient) -> None:
    result = (await gql(CREATE_ACCOUNT, {"input": {"name": "Nowhere", "currencyCode": "XTS"}}))["createAccount"]
    assert user_error(result) == ("INVALID_INPUT", ["input", "currencyCode"])
    assert "'XTS' is not an ISO 4217 currency code this service supports" in result["userErrors"][0]["message"]
    assert "JPY, KRW, MXN" in result["userErrors"][0]["message"]


async def test_an_empty_yen_account_shows_zero(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Tokyo", "JPY")
    assert account["balance"]["available"] == {"amount": "0", "currencyCode": "JPY"}


async def test_large_balances_are_exact(gql: GraphQLClient, account_id: str) -> None:
    for i in range(3):
        await add_funds(gql, account_id, "99999.99", f"k{i}")
    await record_usage(gql, account_id, "0.000001", "u")
    assert (await get_balance(gql, account_id))["available"]["amount"] == "299999.969999"


async def test_one_hundred_and_one_hundred_point_zero_zero_are_the_same_usage(gql: GraphQLClient,
                                                                             funded_id: str) -> None:
    first = await record_usage(gql, funded_id, "12.5", "same")
    again = await record_usage(gql, funded_id, "12.500000", "same")
    assert again["userErrors"] == []
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert await history(gql, funded_id) == [("USAGE", "-12.50"), ("FUNDS_ADDED", "100.00")]


async def test_one_hundred_and_one_hundred_point_zero_zero_are_the_same_funds(gql: GraphQLClient,
                                                                             account_id: str) -> None:
    first = await add_funds(gql, account_id, "100.00", "k")
    again = await add_funds(gql, account_id, "100", "k")
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert (await get_balance(gql, account_id))["available"]["amount"] == "100.00"


async def test_an_amount_with_more_digits_than_decimal_arithmetic_keeps_is_refused_not_rounded(
        gql: GraphQLClient, account_id: str) -> None:
    # 31 and 32 significant digits: rounded to 28, these were 10.00 charged and 1.00 debited.
    refused = await add_funds(gql, account_id, "10.000000000000000000000000000004", "f")
    assert user_error(refused) == ("INVALID_AMOUNT", ["input", "amount"])
    await add_funds(gql, account_id, "100", "seed")
    refused = await record_usage(gql, account_id, "0.9999999999999999999999999999999", "u")
    assert user_error(refused) == ("INVALID_AMOUNT", ["input", "amount"])
    recorded = await record_usage(gql, account_id, "1", "u")  # the key was not used up
    assert recorded["userErrors"] == []
    # The same key with an amount that differs in its 32nd digit is other input, not a retry.
    again = await record_usage(gql, account_id, "1.0000000000000000000000000000001", "u")
    assert user_error(again) == ("IDEMPOTENCY_KEY_REUSED", ["input", "idempotencyKey"])
    assert await history(gql, account_id) == [("USAGE", "-1.00"), ("FUNDS_ADDED", "100.00")]


async def test_every_usage_amount_round_trips_exactly_as_a_plain_decimal(gql: GraphQLClient, account_id: str) -> None:
    await add_funds(gql, account_id, "100000", "seed")
    rng = random.Random(20260101)
    places = [rng.randint(0, 6) for _ in range(40)]
    amounts = [Decimal(rng.randint(1, 100 * 10**p)).scaleb(-p) for p in places]  # 0 < amount <= 100
    expected = Decimal("100000")
    for index, amount in enumerate(amounts):
        result = await record_usage(gql, account_id, format(amount, "f"), f"r{index}")
        shown = result["transaction"]["amount"]["amount"]
        assert PLAIN.fullmatch(shown), shown
        assert Decimal(shown) == -amount
        assert len(shown.partition(".")[2]) >= 2
        expected -= amount
        assert Decimal(result["transaction"]["balanceAfter"]["amount"]) == expected
    shown_balance = (await get_balance(gql, account_id))["available"]["amount"]
    assert PLAIN.fullmatch(shown_balance)
    assert Decimal(shown_balance) == expected
