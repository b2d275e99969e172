"""`credits-graphql serve` and `credits-graphql worker` as real processes, talked to over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    BALANCE,
    RECORD_USAGE,
    Api,
    Launcher,
    Server,
    cli_env,
    create_org_and_key,
    funded_account_with_auto_recharge,
    migrated,
    start_server,
    wait_for_recharge,
)

pytestmark = pytest.mark.slow

INTROSPECTION = "{ __schema { queryType { name } } }"


async def _usage_crossing_the_trigger_is_recharged(api: Api, *, external_worker: bool) -> str:
    """Funds 100, recharge 100 below 50, then 60 of usage; returns the account id once the usage is recorded."""
    account_id = await funded_account_with_auto_recharge(api, funds="100", recharge_amount="100", trigger="50")
    usage = (await api(RECORD_USAGE, {"id": account_id, "amount": "60", "key": "call-1"}))["recordUsage"]
    assert usage["userErrors"] == []
    assert usage["triggeredRecharge"] is not None
    assert usage["transaction"]["amount"]["amount"] == "-60.00"
    if external_worker:
        pending = await api(BALANCE, {"id": account_id})
        assert pending["balance"]["pendingRecharge"]["id"] == usage["triggeredRecharge"]["id"]
        assert pending["balance"]["available"]["amount"] == "40.00", "no worker runs in the server"
    return account_id


def _assert_stops_gracefully_on_sigterm(server: Server) -> None:
    """Exits 0 within the stop timeout after running the application's shutdown (worker stopped, engine closed)."""
    status = server.process.terminate()
    assert status == 0, server.process.describe()
    assert "Application shutdown complete" in server.process.stderr, server.process.describe()


def _assert_recharged(data: dict[str, Any]) -> None:
    assert data["balance"] == {"available": {"amount": "140.00"}, "pendingRecharge": None}
    assert data["account"]["transactions"] == {"totalCount": 1, "edges": [
        {"node": {"amount": {"amount": "100.00"}, "balanceAfter": {"amount": "140.00"}}}]}
    attempts = data["account"]["rechargeAttempts"]
    assert attempts["totalCount"] == 1
    assert attempts["edges"][0]["node"]["status"] == "SUCCEEDED"


async def test_a_dev_server_prints_an_admin_key_and_its_inline_worker_settles_a_recharge(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    server = start_server(launch, cli_env(migrated(sqlite_url, tmp_path), CREDITS_ENV="dev"))
    assert server.dev_key, server.process.stdout
    assert server.graphql_url in server.process.stdout
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "graphiql" in page.text.lower()

        api = Api(client, server.dev_key)
        account_id = await _usage_crossing_the_trigger_is_recharged(api, external_worker=False)
        _assert_recharged(await wait_for_recharge(api, account_id))

    _assert_stops_gracefully_on_sigterm(server)


async def test_an_external_worker_process_settles_the_recharge_that_the_server_leaves_pending(
        tmp_path: Path, any_database_url: str, launch: Launcher) -> None:
    env = cli_env(migrated(any_database_url, tmp_path), CREDITS_ENV="dev", CREDITS_WORKER="external")
    server = start_server(launch, env)
    assert server.dev_key, server.process.stdout
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        api = Api(client, server.dev_key)
        account_id = await _usage_crossing_the_trigger_is_recharged(api, external_worker=True)

        worker = launch("worker", env=env, name="worker")
        worker.wait_for_stdout("worker running")
        _assert_recharged(await wait_for_recharge(api, account_id))

    assert worker.terminate() == 0, worker.describe()
    _assert_stops_gracefully_on_sigterm(server)


async def test_a_prod_server_prints_no_key_serves_no_graphiql_and_refuses_introspection(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    migrated(sqlite_url, tmp_path)
    server = start_server(launch, cli_env(sqlite_url))
    assert server.dev_key is None
    assert "Dev mode" not in server.process.stdout
    _, key = create_org_and_key(sqlite_url, tmp_path)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert not (page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html"))
        assert "graphiql" not in page.text.lower()

        api = Api(client, key)
        assert await api("{ accounts { totalCount } }") == {"accounts": {"totalCount": 0}}
        refused = await api.post(INTROSPECTION)
        body = refused.json()
        assert body.get("errors"), body
        assert not (body.get("data") or {}).get("__schema"), body
    _assert_stops_gracefully_on_sigterm(server)


async def test_an_operation_without_a_key_gets_401_even_where_graphiql_is_served(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    server = start_server(launch, cli_env(migrated(sqlite_url, tmp_path), CREDITS_ENV="dev"))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/graphql", json={"query": "{ accounts { totalCount } }"})
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        ready = await client.get("/readyz")
        assert ready.status_code == 200


def test_serve_exits_with_status_0_on_sigterm(tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    server = start_server(launch, cli_env(migrated(sqlite_url, tmp_path)))
    assert server.process.terminate() == 0, server.process.describe()
