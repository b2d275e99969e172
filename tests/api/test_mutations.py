"""Every mutation through the API, with each userError it can return, its field path, and nothing changed after."""

from __future__ import annotations

from datetime import UTC, datetime

from credits_graphql.gateways.sandbox import SandboxGateway
from tests.api.documents import (
    ACCOUNTS,
    CREATE_ACCOUNT,
    add_funds,
    close_account,
    create_account,
    get_account,
    history,
    record_usage,
    transactions,
    update_payment_method,
    update_settings,
    user_error,
)
from tests.conftest import Clock, GraphQLClient

UNKNOWN_ACCOUNT = "QWNjb3VudDo5OTk5OTk="  # base64("Account:999999")


async def _account_count(gql: GraphQLClient) -> int:
    count: int = (await gql(ACCOUNTS))["accounts"]["totalCount"]
    return count


# createAccount

async def test_a_new_account_starts_empty_active_with_auto_recharge_off(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Support line", "USD", "tok_mastercard")
    assert account["name"] == "Support line"
    assert account["currencyCode"] == "USD"
    assert account["status"] == "ACTIVE"
    assert account["balance"]["available"] == {"amount": "0.00", "currencyCode": "USD"}
    assert account["balance"]["belowTrigger"] is False
    assert account["balance"]["pendingRecharge"] is None
    assert account["rechargeSettings"]["status"] == "DISABLED"
    assert account["paymentMethod"]["brand"] == "mastercard"
    assert account["paymentMethod"]["last4"] == "4444"
    stored = await get_account(gql, account["id"])
    assert {k: v for k, v in stored.items() if k != "balance"} == {k: v for k, v in account.items() if k != "balance"}
    assert stored["balance"]["available"] == {"amount": "0.00", "currencyCode": "USD"}


async def test_an_account_may_be_opened_without_a_payment_method(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Trial", "EUR", token=None)
    assert account["paymentMethod"] is None
    assert (await get_account(gql, account["id"]))["paymentMethod"] is None


async def test_an_unknown_currency_is_refused_on_its_field_and_opens_nothing(gql: GraphQLClient) -> None:
    for currency in ["XYZ", "", "KRONOR", "S3K", "EURO"]:
        result = (await gql(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": currency}}))["createAccount"]
        assert result["account"] is None
        assert user_error(result) == ("INVALID_INPUT", ["input", "currencyCode"]), currency
    assert await _account_count(gql) == 0


async def test_every_promised_currency_is_accepted(gql: GraphQLClient) -> None:
    for currency in ["SEK", "USD", "EUR", "GBP", "NOK", "DKK", "JPY"]:
        account = await create_account(gql, currency, currency, token=None)
        assert account["currencyCode"] == currency
    assert await _account_count(gql) == 7


async def test_an_unknown_payment_token_is_refused_on_its_field_and_opens_nothing(gql: GraphQLClient) -> None:
    result = (await gql(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": "SEK",
                                                   "paymentMethod": {"token": "tok_nope"}}}))["createAccount"]
    assert result["account"] is None
    assert user_error(result) == ("INVALID_INPUT", ["input", "paymentMethod", "token"])
    assert await _account_count(gql) == 0


async def test_a_blank_name_is_refused_on_its_field(gql: GraphQLClient) -> None:
    result = (await gql(CREATE_ACCOUNT, {"input": {"name": "   ", "currencyCode": "SEK"}}))["createAccount"]
    assert user_error(result) == ("INVALID_INPUT", ["input", "name"])
    assert await _account_count(gql) == 0


# addFunds

async def test_added_funds_credit_the_balance_and_appear_in_the_history(gql: GraphQLClient, account_id: str) -> None:
    result = await add_funds(gql, account_id, "250.50", "inv-1")
    assert result["userErrors"] == []
    assert result["transaction"]["kind"] == "FUNDS_ADDED"
    assert result["transaction"]["amount"] == {"amount": "250.50", "currencyCode": "SEK"}
    assert result["transaction"]["balanceAfter"]["amount"] == "250.50"
    assert result["account"]["balance"]["available"]["amount"] == "250.50"
    assert await history(gql, account_id) == [("FUNDS_ADDED", "250.50")]


async def test_repeating_add_funds_with_the_same_key_returns_the_first_result_and_charges_once(
        gql: GraphQLClient, account_id: str, gateway: SandboxGateway) -> None:
    first = await add_funds(gql, account_id, "100", "k")
    again = await add_funds(gql, account_id, "100.00", "k")
    assert again["userErrors"] == []
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert again["account"]["balance"]["available"]["amount"] == "100.00"
    assert await history(gql, account_id) == [("FUNDS_ADDED", "100.00")]
    assert len(gateway.charges) == 1


async def test_reusing_an_add_funds_key_with_another_amount_is_refused(gql: GraphQLClient, funded_id: str) -> None:
    result = await add_funds(gql, funded_id, "50", "seed")
    assert user_error(result) == ("IDEMPOTENCY_KEY_REUSED", ["input", "idempotencyKey"])
    assert result["transaction"] is None
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_an_add_funds_amount_outside_the_bounds_or_the_minor_unit_is_invalid(gql: GraphQLClient,
                                                                                   account_id: str) -> None:
    for amount in ["9.99", "0", "-10", "100000.01", "10.005", "10.001", "1000000000000"]:
        result = await add_funds(gql, account_id, amount, "bad")
        assert user_error(result) == ("INVALID_AMOUNT", ["input", "amount"]), amount
    assert await history(gql, account_id) == []
    assert (await add_funds(gql, account_id, "10.50", "bad"))["userErrors"] == []  # the key was not used up


async def test_the_purchase_bounds_are_inclusive(gql: GraphQLClient, account_id: str) -> None:
    assert (await add_funds(gql, account_id, "10", "low"))["userErrors"] == []
    assert (await add_funds(gql, account_id, "100000", "high"))["userErrors"] == []
    assert (await get_account(gql, account_id))["balance"]["available"]["amount"] == "100010.00"


async def test_yen_funds_must_be_whole_yen(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Tokyo", "JPY")
    result = await add_funds(gql, account["id"], "1500.5", "k")
    assert user_error(result) == ("INVALID_AMOUNT", ["input", "amount"])
    ok = await add_funds(gql, account["id"], "1500", "k")
    assert ok["transaction"]["amount"] == {"amount": "1500", "currencyCode": "JPY"}


async def test_adding_funds_without_a_payment_method_is_refused(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Trial", "SEK", token=None)
    result = await add_funds(gql, account["id"], "100", "k")
    assert result["userErrors"][0]["code"] == "PAYMENT_METHOD_REQUIRED"
    assert await history(gql, account["id"]) == []


async def test_a_declined_card_moves_no_money_and_the_key_may_be_retried_with_a_new_card(
        gql: GraphQLClient, clock: Clock) -> None:
    account = await create_account(gql, "Ops", "SEK", "tok_chargeDeclined")
    declined = await add_funds(gql, account["id"], "100", "k")
    assert declined["userErrors"][0]["code"] == "PAYMENT_DECLINED"
    assert declined["transaction"] is None
    assert await history(gql, account["id"]) == []
    clock.advance(seconds=5)  # the customer takes a moment to enter a new card
    assert (await update_payment_method(gql, account["id"], "tok_visa"))["userErrors"] == []
    retried = await add_funds(gql, account["id"], "100", "k")
    assert retried["userErrors"] == []
    assert await history(gql, account["id"]) == [("FUNDS_ADDED", "100.00")]


async def test_adding_funds_to_an_unknown_account_is_account_not_found(gql: GraphQLClient) -> None:
    result = await add_funds(gql, UNKNOWN_ACCOUNT, "100", "k")
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])


async def test_a_transaction_id_used_as_an_account_id_is_account_not_found(gql: GraphQLClient,
                                                                           funded_id: str) -> None:
    entry_id = (await transactions(gql, funded_id))["edges"][0]["node"]["id"]
    result = await add_funds(gql, entry_id, "100", "k")
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


# updateRechargeSettings

async def test_enabling_auto_recharge_shows_the_settings(gql: GraphQLClient, funded_id: str) -> None:
    result = await update_settings(gql, funded_id, True, "200", "50")
    assert result["userErrors"] == []
    settings = result["account"]["rechargeSettings"]
    assert settings["status"] == "ACTIVE"
    assert settings["rechargeAmount"] == {"amount": "200.00", "currencyCode": "SEK"}
    assert settings["triggerBalance"] == {"amount": "50.00", "currencyCode": "SEK"}
    assert settings["updatedAt"] is not None
    assert (await get_account(gql, funded_id))["rechargeSettings"] == settings


async def test_disabling_auto_recharge_keeps_the_last_amounts(gql: GraphQLClient, funded_id: str) -> None:
    await update_settings(gql, funded_id, True, "200", "50")
    result = await update_settings(gql, funded_id, False)
    settings = result["account"]["rechargeSettings"]
    assert settings["status"] == "DISABLED"
    assert settings["rechargeAmount"]["amount"] == "200.00"
    assert settings["triggerBalance"]["amount"] == "50.00"


INVALID_SETTINGS = [
    (None, "50", "rechargeAmount"),
    ("200", None, "triggerBalance"),
    ("200", "200", "triggerBalance"),
    ("200", "250", "triggerBalance"),
    ("200", "-1", "triggerBalance"),
    ("200", "10.001", "triggerBalance"),
    ("9.99", "5", "rechargeAmount"),
    ("100000.01", "5", "rechargeAmount"),
    ("200.005", "5", "rechargeAmount"),
]


async def test_invalid_recharge_settings_are_refused_on_their_field_and_change_nothing(gql: GraphQLClient,
                                                                                       funded_id: str) -> None:
    await record_usage(gql, funded_id, "95", "low")  # below every trigger tried: a wrongly saved one would recharge
    before = await get_account(gql, funded_id)
    for recharge_amount, trigger, field in INVALID_SETTINGS:
        result = await update_settings(gql, funded_id, True, recharge_amount, trigger)
        assert result["account"] is None
        assert user_error(result) == ("INVALID_RECHARGE_SETTINGS", ["input", field]), (recharge_amount, trigger)
    after = await get_account(gql, funded_id)
    assert after["rechargeSettings"] == before["rechargeSettings"]
    assert after["balance"]["pendingRecharge"] is None


async def test_every_recharge_setting_at_fault_is_reported_on_its_own_field_at_once(gql: GraphQLClient) -> None:
    """A form shows each error next to its input, not one per attempt to save."""
    account = (await create_account(gql, "Trial", "SEK", token=None))["id"]
    errors = (await update_settings(gql, account, True, "5", "-1"))["userErrors"]
    assert [(e["code"], e["field"]) for e in errors] == [
        ("INVALID_RECHARGE_SETTINGS", ["input", "rechargeAmount"]),
        ("INVALID_RECHARGE_SETTINGS", ["input", "triggerBalance"]),
        ("PAYMENT_METHOD_REQUIRED", ["input", "enabled"])]
    errors = (await update_settings(gql, account, True))["userErrors"]
    assert [e["field"] for e in errors] == [["input", "rechargeAmount"], ["input", "triggerBalance"],
                                            ["input", "enabled"]]
    assert all(e["message"] for e in errors)
    assert (await get_account(gql, account))["rechargeSettings"]["status"] == "DISABLED"


async def test_yen_recharge_settings_must_be_whole_yen(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Tokyo", "JPY")
    assert user_error(await update_settings(gql, account["id"], True, "2000.5", "500")) == (
        "INVALID_RECHARGE_SETTINGS", ["input", "rechargeAmount"])
    assert user_error(await update_settings(gql, account["id"], True, "2000", "500.5")) == (
        "INVALID_RECHARGE_SETTINGS", ["input", "triggerBalance"])
    ok = await update_settings(gql, account["id"], True, "2000", "500")
    assert ok["account"]["rechargeSettings"]["rechargeAmount"] == {"amount": "2000", "currencyCode": "JPY"}


async def test_enabling_auto_recharge_needs_a_payment_method(gql: GraphQLClient) -> None:
    account = await create_account(gql, "Trial", "SEK", token=None)
    result = await update_settings(gql, account["id"], True, "200", "50")
    assert result["userErrors"][0]["code"] == "PAYMENT_METHOD_REQUIRED"
    assert (await get_account(gql, account["id"]))["rechargeSettings"]["status"] == "DISABLED"


async def test_settings_of_an_unknown_account_are_account_not_found(gql: GraphQLClient) -> None:
    result = await update_settings(gql, UNKNOWN_ACCOUNT, True, "200", "50")
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])


# updatePaymentMethod

async def test_a_new_payment_method_replaces_the_card(gql: GraphQLClient, account_id: str) -> None:
    result = await update_payment_method(gql, account_id, "tok_mastercard")
    assert result["userErrors"] == []
    assert result["account"]["paymentMethod"]["brand"] == "mastercard"
    assert (await get_account(gql, account_id))["paymentMethod"]["last4"] == "4444"


async def test_an_unknown_token_keeps_the_old_card(gql: GraphQLClient, account_id: str) -> None:
    result = await update_payment_method(gql, account_id, "tok_bogus")
    assert user_error(result) == ("INVALID_INPUT", ["input", "paymentMethod", "token"])
    assert (await get_account(gql, account_id))["paymentMethod"]["last4"] == "4242"


async def test_the_payment_method_of_an_unknown_account_is_account_not_found(gql: GraphQLClient) -> None:
    result = await update_payment_method(gql, UNKNOWN_ACCOUNT, "tok_visa")
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])


# recordUsage

async def test_usage_debits_the_balance_with_its_details(gql: GraphQLClient, funded_id: str) -> None:
    result = await record_usage(gql, funded_id, "1.5", "call-1", "INTERNATIONAL_CALLING", minutes=4,
                                reference="call-42", occurredAt="2026-01-02T03:04:05+01:00")
    assert result["userErrors"] == []
    assert result["triggeredRecharge"] is None
    entry = result["transaction"]
    assert entry["kind"] == "USAGE"
    assert entry["amount"] == {"amount": "-1.50", "currencyCode": "SEK"}
    assert entry["balanceAfter"]["amount"] == "98.50"
    assert (entry["service"], entry["minutes"], entry["reference"]) == ("INTERNATIONAL_CALLING", 4, "call-42")
    assert datetime.fromisoformat(entry["occurredAt"]) == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert result["account"]["balance"]["available"]["amount"] == "98.50"
    stored = (await transactions(gql, funded_id, first=1))["edges"][0]["node"]
    assert datetime.fromisoformat(stored.pop("occurredAt")) == datetime.fromisoformat(entry.pop("occurredAt"))
    assert stored == entry


async def test_usage_without_a_time_happened_now(gql: GraphQLClient, funded_id: str, clock: Clock) -> None:
    entry = (await record_usage(gql, funded_id, "1", "u"))["transaction"]
    assert datetime.fromisoformat(entry["occurredAt"]) == clock.now
    assert (entry["minutes"], entry["reference"]) == (None, None)


async def test_every_service_may_be_billed(gql: GraphQLClient, funded_id: str) -> None:
    services = ["AUDIO_CONFERENCING_DIAL_OUT", "DOMESTIC_CALLING", "INTERNATIONAL_CALLING", "TOLL_FREE"]
    for service in services:
        assert (await record_usage(gql, funded_id, "1", service, service))["userErrors"] == []
    page = await transactions(gql, funded_id, kinds=["USAGE"])
    assert [edge["node"]["service"] for edge in page["edges"]] == services[::-1]


async def test_a_key_refused_for_insufficient_funds_may_be_used_once_funds_arrive(gql: GraphQLClient,
                                                                                 funded_id: str) -> None:
    assert user_error(await record_usage(gql, funded_id, "150", "call-9"))[0] == "INSUFFICIENT_FUNDS"
    await add_funds(gql, funded_id, "100", "more")
    result = await record_usage(gql, funded_id, "150", "call-9")
    assert result["userErrors"] == []
    assert result["transaction"]["balanceAfter"]["amount"] == "50.00"


async def test_usage_beyond_the_balance_is_refused_and_records_nothing(gql: GraphQLClient, funded_id: str) -> None:
    result = await record_usage(gql, funded_id, "100.000001", "big")
    assert user_error(result) == ("INSUFFICIENT_FUNDS", ["input", "amount"])
    assert result["transaction"] is None
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_usage_of_the_whole_balance_leaves_zero(gql: GraphQLClient, funded_id: str) -> None:
    result = await record_usage(gql, funded_id, "100", "all")
    assert result["transaction"]["balanceAfter"]["amount"] == "0.00"


async def test_usage_that_is_not_positive_or_too_precise_is_an_invalid_amount(gql: GraphQLClient,
                                                                              funded_id: str) -> None:
    for amount in ["0", "-1", "0.0000001", "-0.000001"]:
        result = await record_usage(gql, funded_id, amount, "u")
        assert user_error(result) == ("INVALID_AMOUNT", ["input", "amount"]), amount
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_negative_minutes_are_refused_on_their_field(gql: GraphQLClient, funded_id: str) -> None:
    result = await record_usage(gql, funded_id, "1", "u", minutes=-1)
    assert user_error(result) == ("INVALID_INPUT", ["input", "minutes"])
    assert result["userErrors"][0]["message"] == "minutes may not be negative."
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_an_empty_idempotency_key_is_refused_on_its_field(gql: GraphQLClient, funded_id: str) -> None:
    result = await record_usage(gql, funded_id, "1", "")
    assert user_error(result) == ("INVALID_INPUT", ["input", "idempotencyKey"])
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_repeated_usage_with_the_same_key_is_recorded_once(gql: GraphQLClient, funded_id: str) -> None:
    first = await record_usage(gql, funded_id, "2.5", "call-7", minutes=3)
    again = await record_usage(gql, funded_id, "2.50", "call-7", minutes=3)
    assert again["userErrors"] == []
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert await history(gql, funded_id) == [("USAGE", "-2.50"), ("FUNDS_ADDED", "100.00")]


async def test_reusing_a_usage_key_with_different_input_is_refused(gql: GraphQLClient, funded_id: str) -> None:
    await record_usage(gql, funded_id, "2.5", "call-7", minutes=3)
    result = await record_usage(gql, funded_id, "2.5", "call-7", minutes=4)
    assert user_error(result) == ("IDEMPOTENCY_KEY_REUSED", ["input", "idempotencyKey"])
    assert await history(gql, funded_id) == [("USAGE", "-2.50"), ("FUNDS_ADDED", "100.00")]


async def test_a_usage_key_belongs_to_its_account(gql: GraphQLClient, funded_id: str) -> None:
    other = await create_account(gql, "Other", "SEK")
    await add_funds(gql, other["id"], "100", "seed")
    await record_usage(gql, funded_id, "1", "same-key")
    result = await record_usage(gql, other["id"], "2", "same-key")
    assert result["userErrors"] == []
    assert result["transaction"]["balanceAfter"]["amount"] == "98.00"


async def test_usage_on_an_unknown_account_is_account_not_found(gql: GraphQLClient) -> None:
    result = await record_usage(gql, UNKNOWN_ACCOUNT, "1", "u")
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])


# closeAccount

async def test_a_closed_account_keeps_its_history_readable(gql: GraphQLClient, funded_id: str) -> None:
    await record_usage(gql, funded_id, "1", "u")
    result = await close_account(gql, funded_id)
    assert result["userErrors"] == []
    assert result["account"]["status"] == "CLOSED"
    account = await get_account(gql, funded_id)
    assert account["status"] == "CLOSED"
    assert account["balance"]["available"]["amount"] == "99.00"
    assert await history(gql, funded_id) == [("USAGE", "-1.00"), ("FUNDS_ADDED", "100.00")]


async def test_a_closed_account_refuses_every_money_movement_and_settings_change(gql: GraphQLClient,
                                                                                 funded_id: str) -> None:
    await close_account(gql, funded_id)
    assert user_error(await record_usage(gql, funded_id, "1", "later")) == ("ACCOUNT_CLOSED", ["input", "accountId"])
    assert user_error(await add_funds(gql, funded_id, "50", "later"))[0] == "ACCOUNT_CLOSED"
    assert user_error(await update_settings(gql, funded_id, True, "200", "50"))[0] == "ACCOUNT_CLOSED"
    assert user_error(await update_payment_method(gql, funded_id, "tok_mastercard"))[0] == "ACCOUNT_CLOSED"
    account = await get_account(gql, funded_id)
    assert account["balance"]["available"]["amount"] == "100.00"
    assert account["rechargeSettings"]["status"] == "DISABLED"
    assert account["paymentMethod"]["brand"] == "visa"
    assert await history(gql, funded_id) == [("FUNDS_ADDED", "100.00")]


async def test_closing_an_unknown_account_is_account_not_found(gql: GraphQLClient) -> None:
    result = await close_account(gql, UNKNOWN_ACCOUNT)
    assert user_error(result) == ("ACCOUNT_NOT_FOUND", ["input", "accountId"])
