"""recordUsage requests that arrive together, through the API: each is answered and audited as if it had
been sent alone, in the order they arrived, though they share transactions (service/usage_combiner.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.service import usage_combiner
from credits_graphql.service.deps import Deps
from tests.api.documents import add_funds, balance, create_account, record_usage
from tests.conftest import GraphQLClient, make_org

AUDIT = """{ auditEvents(first: 100) { edges { node {
  operation input { name value } outcome errorCodes } } } }"""


async def audited_usage(gql: GraphQLClient) -> list[tuple[str, str, list[str]]]:
    """recordUsage's audit events: (idempotency key, outcome, error codes), sorted."""
    events = [edge["node"] for edge in (await gql(AUDIT))["auditEvents"]["edges"]]
    return sorted(({field["name"]: field["value"] for field in event["input"]}["idempotencyKey"], event["outcome"],
                   event["errorCodes"]) for event in events if event["operation"] == "recordUsage")


async def test_requests_sent_together_are_answered_and_audited_each_as_if_alone(
        gql: GraphQLClient, usage_groups: list[int]) -> None:
    account = (await create_account(gql))["id"]
    await add_funds(gql, account, "10", "seed")
    keys = [f"call-{n}" for n in range(8)] + ["call-1"]  # the same report twice

    answers = await asyncio.gather(*(record_usage(gql, account, "2.5", key) for key in keys))

    # 10.00 pays four reports of 2.50, whichever came first (on PostgreSQL, requests sent together may reach the
    # service in another order); the others are refused.
    recorded = {a["transaction"]["id"]: a["transaction"]["balanceAfter"]["amount"] for a in answers
                if a["transaction"]}
    assert sorted(recorded.values()) == ["0.00", "2.50", "5.00", "7.50"]
    refused = [a for a in answers if not a["transaction"]]
    assert all([e["code"] for e in a["userErrors"]] == ["INSUFFICIENT_FUNDS"] for a in refused)
    assert answers[8]["transaction"] == answers[1]["transaction"]  # the same entry, or both refused
    assert await balance(gql, account) == "0.00"
    # One audit event per request, with the outcome it was answered.
    assert await audited_usage(gql) == sorted(
        (key, "OK", []) if answer["transaction"] else (key, "USER_ERROR", ["INSUFFICIENT_FUNDS"])
        for key, answer in zip(keys, answers, strict=True))
    assert max(usage_groups, default=0) > 1  # they did share transactions


async def test_organizations_reporting_together_each_move_and_see_only_their_own(
        gql: GraphQLClient, deps: Deps, usage_groups: list[int]) -> None:
    # On SQLite their reports share transactions whatever the organization; on PostgreSQL each has its own.
    other = gql.as_key((await make_org(deps, "Globex")).admin)
    ours, theirs = (await create_account(gql))["id"], (await create_account(other))["id"]
    await add_funds(gql, ours, "10", "seed")
    await add_funds(other, theirs, "10", "seed")

    answers = await asyncio.gather(*(
        record_usage(client, account, "1", f"{name}-{n}") for n in range(6)
        for client, account, name in ((gql, ours, "ours"), (other, theirs, "theirs"), (other, ours, "stolen"))))

    codes = [[error["code"] for error in answer["userErrors"]] for answer in answers]
    assert codes == [[], [], ["ACCOUNT_NOT_FOUND"]] * 6  # an account of another organization is not found
    assert await balance(gql, ours) == "4.00"
    assert await balance(other, theirs) == "4.00"
    # Each organization's audit trail holds its own requests, each answered as it was.
    assert await audited_usage(gql) == [(f"ours-{n}", "OK", []) for n in range(6)]
    assert await audited_usage(other) == sorted(
        [(f"theirs-{n}", "OK", []) for n in range(6)]
        + [(f"stolen-{n}", "USER_ERROR", ["ACCOUNT_NOT_FOUND"]) for n in range(6)])
    assert max(usage_groups, default=0) > 1  # they did share transactions


async def test_a_report_whose_caller_gave_up_while_it_waited_is_recorded_with_its_audit_event(
        gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch) -> None:
    account = (await create_account(gql))["id"]
    await add_funds(gql, account, "10", "seed")
    held, release, queued = asyncio.Event(), asyncio.Event(), asyncio.Event()
    run, report = usage_combiner.record_usage, usage_combiner._Report

    async def held_first(deps: Deps, org_id: int, cmd: Any) -> Any:
        if cmd.idempotency_key == "first":
            held.set()
            await release.wait()
        return await run(deps, org_id, cmd)

    def noted(*args: Any) -> Any:
        queued.set()
        return report(*args)

    monkeypatch.setattr(usage_combiner, "record_usage", held_first)
    monkeypatch.setattr(usage_combiner, "_Report", noted)
    first = asyncio.create_task(record_usage(gql, account, "1", "first"))
    await held.wait()
    gave_up = asyncio.create_task(record_usage(gql, account, "2", "gave-up"))
    await queued.wait()  # in line behind "first"'s transaction
    gave_up.cancel()
    release.set()
    await first
    # Sent after "first" was answered, it waits for the group that holds "gave-up".
    third = await record_usage(gql, account, "3", "third")

    assert third["transaction"]["balanceAfter"]["amount"] == "4.00"  # "gave-up" was recorded
    assert await audited_usage(gql) == [("first", "OK", []), ("gave-up", "OK", []), ("third", "OK", [])]


@pytest.mark.parametrize("limit", [1, 3])
async def test_a_process_runs_at_most_the_usage_transactions_it_is_set_to(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """CREDITS_USAGE_TRANSACTIONS: on PostgreSQL the default is 2, so at 1 organizations that report together
    wait for each other's transaction, and share the next."""
    in_flight, most = 0, 0

    def counted(run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await run(*args, **kwargs)
            finally:
                in_flight -= 1
        return counting

    monkeypatch.setattr(usage_combiner, "record_usage", counted(usage_combiner.record_usage))
    monkeypatch.setattr(usage_combiner, "record_usages", counted(usage_combiner.record_usages))
    app = build_app(replace(runtime, settings=replace(runtime.settings, usage_transactions=limit)), run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        clients = [GraphQLClient(http, (await make_org(runtime.deps, f"org {n}")).admin) for n in range(4)]
        accounts = [(await create_account(client))["id"] for client in clients]
        for client, account in zip(clients, accounts, strict=True):
            await add_funds(client, account, "10", "seed")
        most = 0

        answers = await asyncio.gather(*(record_usage(client, account, "1", f"call-{n}") for n in range(5)
                                         for client, account in zip(clients, accounts, strict=True)))

        assert all(answer["transaction"] for answer in answers)
        assert [await balance(client, account) for client, account in zip(clients, accounts, strict=True)] == [
            "5.00"] * 4
    assert 1 <= most <= limit
