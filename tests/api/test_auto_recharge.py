"""Auto-recharge as an API client sees it, with the worker driven by hand (`recharges.run_due`)."""

from __future__ import annotations

from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service import recharges
from credits_graphql.service.deps import Deps
from tests.api.documents import (
    RECHARGE_ATTEMPTS,
    attempts,
    close_account,
    get_account,
    get_balance,
    history,
    record_usage,
    update_payment_method,
    update_settings,
)
from tests.conftest import Clock, GraphQLClient


async def _armed(gql: GraphQLClient, account_id: str, token: str = "tok_visa") -> None:
    """Auto-recharge of 200 below 50 on an account holding 100, charged to `token`."""
    assert (await update_settings(gql, account_id, True, "200", "50"))["userErrors"] == []
    if token != "tok_visa":
        assert (await update_payment_method(gql, account_id, token))["userErrors"] == []


async def _fail_three_times(gql: GraphQLClient, deps: Deps, clock: Clock, account_id: str) -> None:
    await _armed(gql, account_id, "tok_chargeDeclined")
    await record_usage(gql, account_id, "60", "drop")
    assert await recharges.run_due(deps) == 1
    clock.advance(seconds=61)
    assert await recharges.run_due(deps) == 1
    clock.advance(seconds=601)
    assert await recharges.run_due(deps) == 1


async def test_usage_crossing_the_trigger_starts_a_pending_recharge(gql: GraphQLClient, funded_id: str) -> None:
    await _armed(gql, funded_id)
    result = await record_usage(gql, funded_id, "50.01", "drop")
    triggered = result["triggeredRecharge"]
    assert triggered["status"] == "PENDING"
    assert triggered["amount"] == {"amount": "200.00", "currencyCode": "SEK"}
    assert triggered["transaction"] is None
    balance = await get_balance(gql, funded_id)
    assert balance["available"]["amount"] == "49.99"
    assert balance["belowTrigger"] is True
    assert balance["pendingRecharge"]["id"] == triggered["id"]
    assert balance["pendingRecharge"]["status"] == "PENDING"


async def test_usage_that_leaves_exactly_the_trigger_starts_nothing(gql: GraphQLClient, funded_id: str) -> None:
    await _armed(gql, funded_id)
    result = await record_usage(gql, funded_id, "50", "to-trigger")
    assert result["triggeredRecharge"] is None
    balance = await get_balance(gql, funded_id)
    assert (balance["belowTrigger"], balance["pendingRecharge"]) == (False, None)
    assert await attempts(gql, funded_id) == []


async def test_the_worker_credits_a_succeeded_recharge(gql: GraphQLClient, funded_id: str, deps: Deps,
                                                       gateway: SandboxGateway) -> None:
    await _armed(gql, funded_id)
    triggered = (await record_usage(gql, funded_id, "60", "drop"))["triggeredRecharge"]
    assert await recharges.run_due(deps) == 1
    [attempt] = await attempts(gql, funded_id)
    assert attempt["id"] == triggered["id"]
    assert attempt["status"] == "SUCCEEDED"
    assert attempt["failureReason"] is None
    assert attempt["transaction"]["kind"] == "AUTO_RECHARGE"
    assert attempt["transaction"]["amount"] == {"amount": "200.00"}
    balance = await get_balance(gql, funded_id)
    assert balance["available"]["amount"] == "240.00"
    assert (balance["belowTrigger"], balance["pendingRecharge"]) == (False, None)
    assert await history(gql, funded_id) == [("AUTO_RECHARGE", "200.00"), ("USAGE", "-60.00"),
                                             ("FUNDS_ADDED", "100.00")]
    assert [charge[1].micros for charge in gateway.charges] == [100_000_000, 200_000_000]


async def test_further_usage_while_a_recharge_is_pending_starts_no_second_one(gql: GraphQLClient, funded_id: str,
                                                                              deps: Deps) -> None:
    await _armed(gql, funded_id)
    first = await record_usage(gql, funded_id, "60", "u1")
    second = await record_usage(gql, funded_id, "10", "u2")
    assert first["triggeredRecharge"] is not None
    assert second["triggeredRecharge"] is None
    assert len(await attempts(gql, funded_id)) == 1
    await recharges.run_due(deps)
    assert (await get_balance(gql, funded_id))["available"]["amount"] == "230.00"


async def test_a_replayed_usage_reports_the_recharge_it_triggered(gql: GraphQLClient, funded_id: str) -> None:
    await _armed(gql, funded_id)
    first = await record_usage(gql, funded_id, "60", "drop")
    again = await record_usage(gql, funded_id, "60", "drop")
    assert again["transaction"]["id"] == first["transaction"]["id"]
    assert again["triggeredRecharge"]["id"] == first["triggeredRecharge"]["id"]
    assert len(await attempts(gql, funded_id)) == 1


async def test_saving_settings_below_the_trigger_starts_a_recharge(gql: GraphQLClient, funded_id: str,
                                                                   deps: Deps) -> None:
    await record_usage(gql, funded_id, "90", "drop")
    result = await update_settings(gql, funded_id, True, "200", "50")
    assert result["account"]["balance"]["pendingRecharge"]["status"] == "PENDING"
    await recharges.run_due(deps)
    assert (await get_balance(gql, funded_id))["available"]["amount"] == "210.00"


async def test_a_declined_recharge_is_failed_with_its_reason_and_retried_after_the_back_off(
        gql: GraphQLClient, funded_id: str, deps: Deps, clock: Clock) -> None:
    await _armed(gql, funded_id, "tok_chargeDeclined")
    await record_usage(gql, funded_id, "60", "drop")
    assert await recharges.run_due(deps) == 1
    retry, failed = await attempts(gql, funded_id)
    assert failed["status"] == "FAILED"
    assert "declined" in failed["failureReason"]
    assert failed["cancelled"] is False  # a payment failed: the admin is to act
    assert failed["transaction"] is None
    assert retry["status"] == "PENDING"
    balance = await get_balance(gql, funded_id)
    assert balance["pendingRecharge"]["id"] == retry["id"]
    assert balance["available"]["amount"] == "40.00"
    assert await recharges.run_due(deps) == 0  # not before the back-off
    clock.advance(seconds=59)
    assert await recharges.run_due(deps) == 0
    clock.advance(seconds=2)
    assert await recharges.run_due(deps) == 1
    assert [a["status"] for a in await attempts(gql, funded_id)] == ["PENDING", "FAILED", "FAILED"]


async def test_usage_during_the_back_off_starts_no_extra_attempt(gql: GraphQLClient, funded_id: str,
                                                                 deps: Deps) -> None:
    await _armed(gql, funded_id, "tok_chargeDeclined")
    await record_usage(gql, funded_id, "60", "drop")
    await recharges.run_due(deps)
    result = await record_usage(gql, funded_id, "5", "more")
    assert result["triggeredRecharge"] is None
    assert [a["status"] for a in await attempts(gql, funded_id)] == ["PENDING", "FAILED"]


async def test_three_failures_in_a_row_suspend_auto_recharge(gql: GraphQLClient, funded_id: str, deps: Deps,
                                                             clock: Clock) -> None:
    await _fail_three_times(gql, deps, clock, funded_id)
    data = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id}))["account"]
    assert data["rechargeSettings"]["status"] == "SUSPENDED"
    assert [e["node"]["status"] for e in data["rechargeAttempts"]["edges"]] == ["FAILED"] * 3
    assert data["rechargeAttempts"]["totalCount"] == 3
    balance = await get_balance(gql, funded_id)
    assert (balance["available"]["amount"], balance["belowTrigger"], balance["pendingRecharge"]) == (
        "40.00", False, None)
    clock.advance(hours=1)
    assert await recharges.run_due(deps) == 0
    assert (await record_usage(gql, funded_id, "1", "later"))["triggeredRecharge"] is None


async def test_a_new_payment_method_reactivates_a_suspended_auto_recharge(gql: GraphQLClient, funded_id: str,
                                                                          deps: Deps, clock: Clock) -> None:
    await _fail_three_times(gql, deps, clock, funded_id)
    result = await update_payment_method(gql, funded_id, "tok_visa")
    assert result["account"]["rechargeSettings"]["status"] == "ACTIVE"
    assert result["account"]["balance"]["pendingRecharge"]["status"] == "PENDING"
    assert await recharges.run_due(deps) == 1
    assert (await get_balance(gql, funded_id))["available"]["amount"] == "240.00"
    assert [a["status"] for a in await attempts(gql, funded_id)] == ["SUCCEEDED", "FAILED", "FAILED", "FAILED"]


async def test_saving_settings_reactivates_a_suspended_auto_recharge(gql: GraphQLClient, funded_id: str,
                                                                     deps: Deps, clock: Clock) -> None:
    await _fail_three_times(gql, deps, clock, funded_id)
    result = await update_settings(gql, funded_id, True, "300", "50")
    assert result["account"]["rechargeSettings"]["status"] == "ACTIVE"
    assert result["account"]["balance"]["pendingRecharge"]["amount"]["amount"] == "300.00"


async def test_recharge_attempts_page_newest_first(gql: GraphQLClient, funded_id: str, deps: Deps,
                                                   clock: Clock) -> None:
    await _fail_three_times(gql, deps, clock, funded_id)
    first = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id, "first": 2}))["account"]["rechargeAttempts"]
    assert first["totalCount"] == 3
    assert first["pageInfo"]["hasNextPage"] is True
    rest = (await gql(RECHARGE_ATTEMPTS, {"id": funded_id, "first": 2, "after": first["pageInfo"]["endCursor"]}))
    rest_page = rest["account"]["rechargeAttempts"]
    assert rest_page["pageInfo"]["hasNextPage"] is False
    created = [e["node"]["createdAt"] for e in first["edges"] + rest_page["edges"]]
    assert len(set(e["node"]["id"] for e in first["edges"] + rest_page["edges"])) == 3
    assert created == sorted(created, reverse=True)


async def test_disabling_auto_recharge_keeps_a_pending_recharge_from_charging(
        gql: GraphQLClient, funded_id: str, deps: Deps, gateway: SandboxGateway) -> None:
    await _armed(gql, funded_id)
    await record_usage(gql, funded_id, "60", "drop")
    await update_settings(gql, funded_id, False)
    await recharges.run_due(deps)
    assert (await get_balance(gql, funded_id))["pendingRecharge"] is None
    assert (await get_balance(gql, funded_id))["available"]["amount"] == "40.00"
    assert len(gateway.charges) == 1  # only the seed funds
    [cancelled] = await attempts(gql, funded_id)
    # FAILED as the contract's statuses go, but no payment failed: a UI tells it apart by `cancelled`
    assert (cancelled["status"], cancelled["cancelled"]) == ("FAILED", True)
    assert cancelled["failureReason"] == "cancelled: auto-recharge disabled"


async def test_closing_an_account_keeps_a_pending_recharge_from_charging(
        gql: GraphQLClient, funded_id: str, deps: Deps, gateway: SandboxGateway) -> None:
    await _armed(gql, funded_id)
    await record_usage(gql, funded_id, "60", "drop")
    await close_account(gql, funded_id)
    await recharges.run_due(deps)
    account = await get_account(gql, funded_id)
    assert account["balance"]["available"]["amount"] == "40.00"
    assert account["balance"]["pendingRecharge"] is None
    assert len(gateway.charges) == 1
