"""Fixtures of the hostile-input tests: a funded account, a snapshot of what a hostile request must not
change, an app built with other settings (production defaults, small limits), and a stopwatch whose table
of (input, status, code, milliseconds) is printed when the module ends (`pytest -s` shows it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from credits_graphql.app import build_app
from credits_graphql.bootstrap import Runtime
from credits_graphql.gateways.sandbox import SandboxGateway
from credits_graphql.service.deps import Deps
from credits_graphql.settings import Environment, Settings
from tests.conftest import GraphQLClient
from tests.service.support import assert_every_ledger_consistent

SNAPSHOT = """query($id: ID!) {
  account(id: $id) {
    name status balance { available { amount } } transactions(first: 100) { totalCount }
    rechargeSettings { status rechargeAmount { amount } triggerBalance { amount } updatedAt }
    paymentMethod { brand last4 updatedAt } rechargeAttempts(first: 1) { totalCount }
  }
  accounts(first: 100) { totalCount }
}"""


@dataclass(frozen=True)
class Snapshot:
    """What a refused request must leave exactly as it was."""

    name: str
    status: str
    balance: str
    transactions: int
    accounts: int
    recharge_settings: dict[str, Any]
    payment_method: dict[str, Any] | None
    recharge_attempts: int
    card_charges: int
    """Charges the payment gateway made: a refused request charges no card either."""


_gateway: list[SandboxGateway] = []
"""The test's gateway, which its app charges (set by `snapshots_see_the_gateway`)."""


@pytest.fixture(autouse=True)
def snapshots_see_the_gateway(gateway: SandboxGateway) -> Iterator[None]:
    _gateway.append(gateway)
    yield
    _gateway.remove(gateway)


async def snapshot(gql: GraphQLClient, account_id: str) -> Snapshot:
    data = await gql(SNAPSHOT, {"id": account_id})
    account = data["account"]
    return Snapshot(name=account["name"], status=account["status"], balance=account["balance"]["available"]["amount"],
                    transactions=account["transactions"]["totalCount"], accounts=data["accounts"]["totalCount"],
                    recharge_settings=account["rechargeSettings"], payment_method=account["paymentMethod"],
                    recharge_attempts=account["rechargeAttempts"]["totalCount"],
                    card_charges=len(_gateway[-1].charges))


def codes_of(response: httpx.Response) -> list[str]:
    body = response.json()
    return [str((error.get("extensions") or {}).get("code")) for error in body.get("errors") or []]


def messages_of(response: httpx.Response) -> list[str]:
    return [str(error.get("message")) for error in response.json().get("errors") or []]


def _user_error_codes(data: Any) -> str:
    """For a served request: its userErrors' codes, else `data served`."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            found.extend(str(error.get("code")) for error in value.get("userErrors") or [])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return "userError " + ",".join(sorted(set(found))) if found else "none (data served)"


@dataclass
class Stopwatch:
    """Times each hostile request and keeps a row for the closing table."""

    rows: list[tuple[str, str, int, str, float]] = field(default_factory=list)
    backend: str = ""

    async def time(self, label: str, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        started = time.perf_counter()
        response = await call()
        elapsed = (time.perf_counter() - started) * 1000
        try:
            code = ",".join(sorted(set(codes_of(response)))) or _user_error_codes(response.json().get("data"))
        except ValueError:
            code = "(not JSON)"
        self.rows.append((label, self.backend, response.status_code, code, elapsed))
        return response

    def table(self) -> str:
        """One row per input: status and code (per database when they differ) and the time on each database."""
        backends = list(dict.fromkeys(backend for _, backend, _, _, _ in self.rows))
        seen: dict[str, dict[str, tuple[int, str, float]]] = {}
        for label, backend, status, code, ms in self.rows:
            seen.setdefault(label, {})[backend] = (status, code, ms)
        lines = ["| input | status | code | " + " | ".join(f"ms ({b})" for b in backends) + " |",
                 "| --- | --- | --- | " + " | ".join("---:" for _ in backends) + " |"]
        for label, by_backend in seen.items():
            statuses = "/".join(dict.fromkeys(str(status) for status, _, _ in by_backend.values()))
            codes = "/".join(dict.fromkeys(code for _, code, _ in by_backend.values()))
            times = " | ".join(f"{by_backend[b][2]:.1f}" if b in by_backend else "" for b in backends)
            lines.append(f"| {label} | {statuses} | {codes} | {times} |")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def stopwatch_rows() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    yield watch
    if watch.rows:
        print("\n\nHostile inputs (wall time of each request through the ASGI app):\n")
        print(watch.table())


@pytest.fixture
def stopwatch(stopwatch_rows: Stopwatch, database_url: str) -> Stopwatch:
    stopwatch_rows.backend = database_url.split("+", 1)[0]
    return stopwatch_rows


@pytest.fixture
async def funded_id(gql: GraphQLClient) -> str:
    """A SEK account with a Visa card holding 100.00 (one FUNDS_ADDED entry)."""
    created = await gql("""mutation { createAccount(input: {name: "Ops", currencyCode: "SEK",
        paymentMethod: {token: "tok_visa"}}) { account { id } userErrors { code } } }""")
    account_id = str(created["createAccount"]["account"]["id"])
    funded = await gql("""mutation($id: ID!) { addFunds(input: {accountId: $id, amount: "100", idempotencyKey: "seed"})
        { transaction { id } userErrors { code } } }""", {"id": account_id})
    assert funded["addFunds"]["userErrors"] == []
    return account_id


def prod_settings(settings: Settings, **changes: Any) -> Settings:
    """The production defaults (as `Settings.from_env` gives without CREDITS_ENV), on the test database."""
    return replace(settings, env=Environment.PROD, graphiql=False, introspection=False, field_suggestions=False,
                   **changes)


@asynccontextmanager
async def client_for(runtime: Runtime, settings: Settings, *, raise_app_exceptions: bool = True,
                     ) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app built with other settings, on the same database and dependencies. With
    raise_app_exceptions=False an exception escaping the app is the 500 a real server would answer."""
    app = build_app(replace(runtime, settings=settings), run_worker=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def ledger_rule_holds_afterwards(deps: Deps) -> AsyncIterator[None]:
    """The test ends by checking the ledger rule on every account (tests/service/conftest.py). Not for the fuzz
    test: its database outlives a test's own (`deps` would empty it)."""
    yield
    await assert_every_ledger_consistent(deps)
