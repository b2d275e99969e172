"""Adding funds by hand: the card is charged once per idempotency key and the credit is exact."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from credits_graphql.domain.errors import ErrorCode
from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.money import MAX_BALANCE_MICROS, Money
from credits_graphql.domain.policy import Policy
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import accounts
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import CardDetails, ChargeResult
from tests.conftest import Clock, Org, make_org
from tests.service.support import credit_in_one_entry, entries, fund, micros, open_account, reload, violation


async def test_adding_funds_charges_the_card_and_credits_the_account_once(deps: Deps, org: Org,
                                                                          gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    recorded = await fund(deps, org.id, account.id, "125.50")
    assert recorded.entry.kind is EntryKind.FUNDS_ADDED
    assert recorded.entry.amount_micros == micros("125.50")
    assert recorded.entry.balance_after_micros == micros("125.50")
    assert recorded.account.balance_micros == micros("125.50")
    assert (await reload(deps, account.id)).balance_micros == micros("125.50")
    assert [e.kind for e in await entries(deps, account.id)] == [EntryKind.FUNDS_ADDED]
    assert len(gateway.charges) == 1
    token, money, result = gateway.charges[0]
    assert (token, money.micros, money.currency, result.succeeded) == ("tok_visa", micros("125.50"), "SEK", True)


async def test_the_same_key_and_amount_written_differently_replays_the_first_credit(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    first = await fund(deps, org.id, account.id, "100", key="k")
    again = await fund(deps, org.id, account.id, "100.00", key="k")
    assert again.entry.id == first.entry.id
    assert again.entry.amount_micros == micros("100")
    assert (await reload(deps, account.id)).balance_micros == micros("100")
    assert len(await entries(deps, account.id)) == 1
    assert len(gateway.charges) == 1


async def test_the_same_key_with_another_amount_is_refused_as_key_reuse(deps: Deps, org: Org,
                                                                        gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100", key="k")
    with violation(ErrorCode.IDEMPOTENCY_KEY_REUSED, ["input", "idempotencyKey"]):
        await fund(deps, org.id, account.id, "200", key="k")
    assert (await reload(deps, account.id)).balance_micros == micros("100")
    assert len(gateway.charges) == 1


async def test_different_keys_add_funds_twice(deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10", key="a")
    await fund(deps, org.id, account.id, "10", key="b")
    assert (await reload(deps, account.id)).balance_micros == micros("20")
    assert len(gateway.charges) == 2


async def test_a_declined_card_records_nothing_and_the_key_may_be_retried_with_a_new_card(
        deps: Deps, org: Org, gateway: SandboxGateway, clock: Clock) -> None:
    account = await open_account(deps, org.id, token="tok_chargeDeclined")
    with violation(ErrorCode.PAYMENT_DECLINED):
        await fund(deps, org.id, account.id, "50", key="k")
    assert (await reload(deps, account.id)).balance_micros == 0
    assert await entries(deps, account.id) == []

    clock.advance(seconds=5)
    await accounts.update_payment_method(deps, org.id, account.id, "tok_visa")
    recorded = await fund(deps, org.id, account.id, "50", key="k")
    assert recorded.entry.amount_micros == micros("50")
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert [result.succeeded for _, _, result in gateway.charges] == [False, True]


async def test_a_declined_key_may_be_retried_with_a_card_replaced_at_the_same_instant(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id, token="tok_chargeDeclined")
    with violation(ErrorCode.PAYMENT_DECLINED):
        await fund(deps, org.id, account.id, "50", key="k")
    await accounts.update_payment_method(deps, org.id, account.id, "tok_visa")
    recorded = await fund(deps, org.id, account.id, "50", key="k")
    assert recorded.entry.amount_micros == micros("50")
    assert [token for token, _, _ in gateway.charges] == ["tok_chargeDeclined", "tok_visa"]


class CardWithALimit:
    """A gateway as strict as a real one: a key sent again with another card or amount is an error, a key is at most
    255 characters, and this card declines charges over 1000."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.charged: dict[str, tuple[str, Money]] = {}

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        if len(idempotency_key) > 255 or self.charged.setdefault(idempotency_key, (token, amount)) != (token, amount):
            raise ValueError(f"idempotency key {idempotency_key!r} refused")
        if amount.micros > micros("1000"):
            return ChargeResult(succeeded=False, failure_reason="over the card's limit")
        return await self.inner.charge(token, amount, idempotency_key)

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return await self.inner.find_charge(idempotency_key)


async def test_a_declined_key_may_be_retried_with_another_amount_on_the_same_card(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    deps = replace(deps, gateway=CardWithALimit(gateway))
    account = await open_account(deps, org.id)
    key = "k" * 255  # the longest key a client may send
    with violation(ErrorCode.PAYMENT_DECLINED):
        await fund(deps, org.id, account.id, "5000", key=key)

    recorded = await fund(deps, org.id, account.id, "500", key=key)

    assert recorded.entry.amount_micros == micros("500")
    assert (await reload(deps, account.id)).balance_micros == micros("500")
    assert [str(amount) for _, amount, _ in gateway.charges] == ["500.00 SEK"]


class CardFundedLater:
    """A gateway that answers a key it has seen with its first result, and a card that declines until funded."""

    def __init__(self, inner: SandboxGateway) -> None:
        self.inner = inner
        self.funded = False
        self.answers: dict[str, ChargeResult] = {}

    async def describe(self, token: str) -> CardDetails:
        return await self.inner.describe(token)

    async def charge(self, token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        if idempotency_key not in self.answers:
            self.answers[idempotency_key] = (await self.inner.charge(token, amount, idempotency_key) if self.funded
                                             else ChargeResult(succeeded=False, failure_reason="insufficient funds"))
        return self.answers[idempotency_key]

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        return self.answers.get(idempotency_key)


async def test_a_declined_request_retried_with_its_key_charges_the_card_again(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    card = CardFundedLater(gateway)
    deps = replace(deps, gateway=card)
    account = await open_account(deps, org.id)
    for _ in range(2):
        with violation(ErrorCode.PAYMENT_DECLINED):
            await fund(deps, org.id, account.id, "50", key="invoice-7")
    card.funded = True  # the customer tops up the card, and the client sends the same request again

    recorded = await fund(deps, org.id, account.id, "50", key="invoice-7")
    again = await fund(deps, org.id, account.id, "50", key="invoice-7")

    assert recorded.entry.amount_micros == micros("50")
    assert again.entry.id == recorded.entry.id
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert [str(amount) for _, amount, _ in gateway.charges] == ["50.00 SEK"]
    assert len(card.answers) == 3  # two declines, one charge: the replay charged nothing


async def test_a_declined_card_stays_declined_on_a_retry_with_the_same_card(deps: Deps, org: Org) -> None:
    account = await open_account(deps, org.id, token="tok_chargeDeclined")
    for _ in range(2):
        with violation(ErrorCode.PAYMENT_DECLINED):
            await fund(deps, org.id, account.id, "50", key="k")
    assert await entries(deps, account.id) == []


async def test_adding_funds_without_a_payment_method_is_refused(deps: Deps, org: Org,
                                                                gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id, token=None)
    with violation(ErrorCode.PAYMENT_METHOD_REQUIRED):
        await fund(deps, org.id, account.id, "50")
    assert gateway.charges == []
    assert (await reload(deps, account.id)).balance_micros == 0


@pytest.mark.parametrize(("currency", "amount"), [
    ("SEK", "9.99"), ("SEK", "100000.01"), ("SEK", "10.001"), ("SEK", "0"), ("SEK", "-50"),
    ("JPY", "10.5"), ("JPY", "9"),
])
async def test_amounts_outside_the_bounds_or_finer_than_the_minor_unit_are_invalid(
        deps: Deps, org: Org, gateway: SandboxGateway, currency: str, amount: str) -> None:
    account = await open_account(deps, org.id, currency=currency)
    with violation(ErrorCode.INVALID_AMOUNT, ["input", "amount"]):
        await fund(deps, org.id, account.id, amount)
    assert gateway.charges == []
    assert (await reload(deps, account.id)).balance_micros == 0


@pytest.mark.parametrize(("currency", "amount"), [("SEK", "10"), ("SEK", "100000.00"), ("JPY", "1500"),
                                                  ("EUR", "10.10")])
async def test_amounts_on_the_bounds_and_in_whole_minor_units_are_credited_exactly(
        deps: Deps, org: Org, currency: str, amount: str) -> None:
    account = await open_account(deps, org.id, currency=currency)
    recorded = await fund(deps, org.id, account.id, amount)
    assert recorded.entry.amount.amount == Decimal(amount)
    assert (await reload(deps, account.id)).balance_micros == micros(amount)


async def test_a_closed_account_refuses_funds(deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    await accounts.close_account(deps, org.id, account.id)
    with violation(ErrorCode.ACCOUNT_CLOSED):
        await fund(deps, org.id, account.id, "50")
    assert gateway.charges == []


async def test_another_organizations_account_is_not_found_and_not_charged(deps: Deps, org: Org,
                                                                          gateway: SandboxGateway) -> None:
    theirs = await open_account(deps, (await make_org(deps, "Other")).id)
    with violation(ErrorCode.ACCOUNT_NOT_FOUND, ["input", "accountId"]):
        await fund(deps, org.id, theirs.id, "50")
    assert gateway.charges == []
    assert (await reload(deps, theirs.id)).balance_micros == 0


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_overlong_idempotency_key_is_invalid_input(deps: Deps, org: Org, key: str,
                                                                     gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    with violation(ErrorCode.INVALID_INPUT, ["input", "idempotencyKey"]):
        await fund(deps, org.id, account.id, "50", key=key)
    assert gateway.charges == []
    assert (await reload(deps, account.id)).balance_micros == 0


async def test_funds_replayed_after_the_account_closed_return_the_first_credit(deps: Deps, org: Org,
                                                                               gateway: SandboxGateway) -> None:
    account = await open_account(deps, org.id)
    first = await fund(deps, org.id, account.id, "50", key="k")
    await accounts.close_account(deps, org.id, account.id)
    again = await fund(deps, org.id, account.id, "50", key="k")
    assert again.entry.id == first.entry.id
    assert (await reload(deps, account.id)).balance_micros == micros("50")
    assert len(gateway.charges) == 1


async def test_funds_that_would_take_the_balance_above_the_most_an_account_may_hold_are_refused_before_any_charge(
        deps: Deps, org: Org, gateway: SandboxGateway) -> None:
    deps = replace(deps, policy=Policy(max_purchase=Decimal(10**9)))  # the largest CREDITS_MAX_PURCHASE allowed
    account = await open_account(deps, org.id, currency="VND")
    await credit_in_one_entry(deps, account.id, MAX_BALANCE_MICROS - micros("1000000000"))
    await fund(deps, org.id, account.id, "1000000000", key="up-to-the-most")

    with violation(ErrorCode.INVALID_AMOUNT, ["input", "amount"]) as refused:
        await fund(deps, org.id, account.id, "10", key="one-too-many")

    assert "An account may hold at most 1000000000000 VND" in refused.value.message
    assert len(gateway.charges) == 1
    assert (await reload(deps, account.id)).balance_micros == MAX_BALANCE_MICROS
