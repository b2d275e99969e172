"""Opening and closing accounts, and the payment method on them."""

from __future__ import annotations

import pytest

from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.ledger import AccountStatus
from credits_graphql.domain.recharge import RechargeStatus
from credits_graphql.service import accounts, queries
from credits_graphql.service.deps import Deps
from tests.conftest import Org, make_org
from tests.service.support import entries, open_account, reload, violation


async def test_a_new_account_starts_empty_and_active_with_its_card(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, name="  Telephony EU  ", currency="EUR", token="tok_mastercard")
    stored = await reload(deps, account.id)
    assert stored.name == "Telephony EU"
    assert stored.currency == "EUR"
    assert stored.status is AccountStatus.ACTIVE
    assert stored.balance_micros == 0
    assert stored.recharge.status is RechargeStatus.DISABLED
    assert stored.payment_method is not None
    assert (stored.payment_method.brand, stored.payment_method.last4) == ("mastercard", "4444")
    assert await entries(deps, account.id) == []


async def test_an_account_may_be_opened_without_a_payment_method(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, token=None)
    assert (await reload(deps, account.id)).payment_method is None


async def test_a_lowercase_currency_code_is_stored_in_upper_case(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, currency="usd")
    assert (await reload(deps, account.id)).currency == "USD"


@pytest.mark.parametrize("code", ["XXX", "SE", "EURO", "", "123"])
async def test_an_unknown_currency_code_is_invalid_input_on_the_currency_field(deps: Deps, org: Org,
                                                                                code: str) -> None:
    with violation(ErrorCode.INVALID_INPUT, ["input", "currencyCode"]):
        await open_account(deps, org.id, currency=code)
    assert await queries.count_accounts(deps, org.id) == 0


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_a_blank_or_overlong_name_is_invalid_input_on_the_name_field(deps: Deps, org: Org, name: str) -> None:
    with violation(ErrorCode.INVALID_INPUT, ["input", "name"]):
        await open_account(deps, org.id, name=name)
    assert await queries.count_accounts(deps, org.id) == 0


@pytest.mark.parametrize("token", ["tok_unknown", ""])
async def test_an_unknown_payment_token_is_invalid_input_on_the_token_field(deps: Deps, org: Org, token: str) -> None:
    with violation(ErrorCode.INVALID_INPUT, ["input", "paymentMethod", "token"]):
        await open_account(deps, org.id, token=token)
    assert await queries.count_accounts(deps, org.id) == 0


async def test_replacing_the_payment_method_shows_the_new_card(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, token=None)
    await accounts.update_payment_method(deps, org.id, account.id, "tok_mastercard")
    method = (await reload(deps, account.id)).payment_method
    assert method is not None
    assert (method.token, method.brand, method.last4) == ("tok_mastercard", "mastercard", "4444")


async def test_replacing_the_payment_method_with_an_unknown_token_keeps_the_old_card(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, token="tok_visa")
    with violation(ErrorCode.INVALID_INPUT, ["input", "paymentMethod", "token"]):
        await accounts.update_payment_method(deps, org.id, account.id, "tok_nope")
    method = (await reload(deps, account.id)).payment_method
    assert method is not None
    assert method.token == "tok_visa"


async def test_closing_an_account_twice_is_not_an_error(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await accounts.close_account(deps, org.id, account.id)
    again = await accounts.close_account(deps, org.id, account.id)
    assert again.status is AccountStatus.CLOSED
    assert (await reload(deps, account.id)).status is AccountStatus.CLOSED


async def test_a_closed_account_refuses_a_new_payment_method(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id)
    await accounts.close_account(deps, org.id, account.id)
    with violation(ErrorCode.ACCOUNT_CLOSED):
        await accounts.update_payment_method(deps, org.id, account.id, "tok_mastercard")
    method = (await reload(deps, account.id)).payment_method
    assert method is not None
    assert method.token == "tok_visa"


async def test_another_organizations_account_cannot_be_seen_closed_or_changed(deps: Deps, org: Org) -> None:
    theirs = await open_account(deps, (await make_org(deps, "Other")).id)
    assert await queries.account(deps, org.id, theirs.id) is None
    with violation(ErrorCode.ACCOUNT_NOT_FOUND, ["input", "accountId"]):
        await accounts.close_account(deps, org.id, theirs.id)
    with violation(ErrorCode.ACCOUNT_NOT_FOUND, ["input", "accountId"]):
        await accounts.update_payment_method(deps, org.id, theirs.id, "tok_mastercard")
    stored = await reload(deps, theirs.id)
    assert stored.status is AccountStatus.ACTIVE
    assert stored.payment_method is not None
    assert stored.payment_method.token == "tok_visa"


async def test_an_unknown_account_id_is_account_not_found(deps: Deps, org: Org) -> None:
    with violation(ErrorCode.ACCOUNT_NOT_FOUND):
        await accounts.close_account(deps, org.id, 999_999)
