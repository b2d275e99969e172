"""On SQLite a balance read runs no statement on a connection's thread and a usage report a handful: each trip
there and back costs more than the SQL (store/sqlite_driver.py)."""

from __future__ import annotations

import pytest

from tests.api.documents import balance, record_usage
from tests.conftest import GraphQLClient


@pytest.fixture(autouse=True)
def sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("aiosqlite's thread: PostgreSQL's driver is asynchronous")


async def test_a_balance_read_takes_no_trip_to_a_connections_thread(
        gql: GraphQLClient, funded_id: str, hops: list[str]) -> None:
    hops.clear()
    assert await balance(gql, funded_id) == "100.00"
    assert hops == []


async def test_a_usage_report_takes_one_trip_per_statement_it_waits_for(
        gql: GraphQLClient, funded_id: str, hops: list[str]) -> None:
    hops.clear()
    result = await record_usage(gql, funded_id, "1.50", "call-1")
    assert result["userErrors"] == []
    assert result["account"]["balance"]["available"]["amount"] == "98.50"
    # The account (with BEGIN IMMEDIATE and the audit event), the insert (which finds a used idempotency key
    # itself), then the account's update with the COMMIT; the API key before it and the balance after it are
    # point reads on the loop's thread.
    assert hops == ["_run_each", "_run_each", "_finish"]
