"""Real processes: the installed `credits-graphql` command run with subprocess, and `serve` / `worker`
processes talked to over HTTP. Every process started here is killed in fixture teardown, whatever the
test did. Each test gets its own database: a SQLite file in tmp_path, or a PostgreSQL database of its own
on the machine's server (created here, dropped WITH (FORCE) afterwards)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "credits-graphql"
POSTGRES_ADMIN_DSN = os.environ.get("CREDITS_E2E_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CLI_TIMEOUT_SECONDS = 60
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(database_url: str, **settings: str) -> dict[str, str]:
    """The caller's environment without any CREDITS_* setting, plus the database and `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CREDITS_")}
    env["CREDITS_DATABASE_URL"] = database_url
    env.update(settings)
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1].strip() if lines else ""

    @property
    def error_lines(self) -> list[str]:
        """stderr without the log lines (timestamped INFO/WARNING records)."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> CliResult:
    completed = subprocess.run([str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True,
                               timeout=CLI_TIMEOUT_SECONDS, check=False)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class Process:
    """A long-running `credits-graphql` process whose output goes to files in tmp_path."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"{self.name} (exit {self.popen.poll()})\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def wait_for_stdout(self, pattern: str, timeout: float = START_TIMEOUT_SECONDS) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.stdout)
            if match:
                return match
            if self.popen.poll() is not None:
                pytest.fail(f"process ended before printing {pattern!r}: {self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} within {timeout} s: {self.describe()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, then the exit status; fails the test if the process does not end in time."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"{self.name} did not exit within {timeout} s of SIGTERM: {self.describe()}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class Launcher:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def __call__(self, *args: str, env: dict[str, str], name: str | None = None) -> Process:
        name = name or f"{args[0]}-{len(self.started)}"
        stdout_path = self.directory / f"{name}.stdout"
        stderr_path = self.directory / f"{name}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen([str(CLI), *args], env=env, cwd=self.directory, stdout=out, stderr=err)
        process = Process(name, popen, stdout_path, stderr_path)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """Starts `credits-graphql ARGS...` in tmp_path; every process is killed at teardown."""
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.kill_all()


@dataclass
class Server:
    process: Process
    base_url: str
    graphql_url: str
    dev_key: str | None = None


def wait_until_healthy(server: Server, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.process.popen.poll() is not None:
            pytest.fail(f"server ended before /healthz answered: {server.process.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz not 200 within {timeout} s: {server.process.describe()}")
        time.sleep(0.05)


def start_server(launch: Launcher, env: dict[str, str], *args: str) -> Server:
    """`credits-graphql serve [ARGS...]` on a free port; returns once /healthz answers 200."""
    port = free_port()
    process = launch("serve", "--port", str(port), *args, env=env, name=f"serve-{port}")
    match = process.wait_for_stdout(r"serving (http://\S+)/graphql")
    base_url = match.group(1)
    key = re.search(r"Authorization: Bearer (\S+)", process.stdout)
    server = Server(process, base_url, f"{base_url}/graphql", key.group(1) if key else None)
    wait_until_healthy(server)
    return server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh (not yet migrated) SQLite file of this test's own."""
    return f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"


async def as_admin(sql: str) -> None:
    """Runs `sql` as the PostgreSQL superuser, on its maintenance database."""
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh (not yet migrated) PostgreSQL database of this test's own."""
    name = f"credits_e2e_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    asyncio.run(as_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    return url


def migrated(database_url: str, cwd: Path) -> str:
    result = run_cli("migrate", env=cli_env(database_url), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return database_url


def create_org_and_key(database_url: str, cwd: Path, role: str = "ADMIN") -> tuple[int, str]:
    env = cli_env(database_url)
    org = run_cli("create-org", "Acme", env=env, cwd=cwd)
    assert org.returncode == 0, org.stderr
    key = run_cli("create-api-key", "--org", org.last_line, "--role", role, env=env, cwd=cwd)
    assert key.returncode == 0, key.stderr
    return int(org.last_line), key.last_line


class Api:
    """A GraphQL client over real HTTP."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.key = key

    async def post(self, query: str, variables: dict[str, Any] | None = None,
                   *, key: str | None = None) -> httpx.Response:
        return await self.client.post("/graphql", json={"query": query, "variables": variables or {}},
                                      headers={"Authorization": f"Bearer {key or self.key}"})

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.post(query, variables)
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


CREATE_ACCOUNT = """mutation($input: CreateAccountInput!) {
  createAccount(input: $input) { account { id } userErrors { code message } } }"""
ADD_FUNDS = """mutation($id: ID!, $amount: Decimal!, $key: String!) {
  addFunds(input: {accountId: $id, amount: $amount, idempotencyKey: $key}) {
    transaction { id } userErrors { code message } } }"""
RECHARGE_SETTINGS = """mutation($id: ID!, $amount: Decimal!, $trigger: Decimal!) {
  updateRechargeSettings(input: {accountId: $id, enabled: true, rechargeAmount: $amount, triggerBalance: $trigger}) {
    account { rechargeSettings { status } } userErrors { code message } } }"""
RECORD_USAGE = """mutation($id: ID!, $amount: Decimal!, $key: String!) {
  recordUsage(input: {accountId: $id, service: DOMESTIC_CALLING, amount: $amount, idempotencyKey: $key}) {
    transaction { id amount { amount } } triggeredRecharge { id status } userErrors { code message } } }"""
BALANCE = """query($id: ID!) {
  balance(accountId: $id) { available { amount } pendingRecharge { id status } }
  account(id: $id) {
    transactions(kinds: [AUTO_RECHARGE]) { totalCount edges { node { amount { amount } balanceAfter { amount } } } }
    rechargeAttempts { totalCount edges { node { id status } } } } }"""


async def funded_account_with_auto_recharge(api: Api, *, funds: str, recharge_amount: str, trigger: str) -> str:
    """A SEK account paid by tok_visa, funded with `funds`, auto-recharge ACTIVE; returns its id."""
    created = await api(CREATE_ACCOUNT, {"input": {"name": "Ops", "currencyCode": "SEK",
                                                   "paymentMethod": {"token": "tok_visa"}}})
    assert created["createAccount"]["userErrors"] == []
    account_id: str = created["createAccount"]["account"]["id"]
    added = await api(ADD_FUNDS, {"id": account_id, "amount": funds, "key": "initial-funds"})
    assert added["addFunds"]["userErrors"] == []
    settings = await api(RECHARGE_SETTINGS, {"id": account_id, "amount": recharge_amount, "trigger": trigger})
    assert settings["updateRechargeSettings"]["userErrors"] == []
    assert settings["updateRechargeSettings"]["account"]["rechargeSettings"]["status"] == "ACTIVE"
    return account_id


LEDGER = """query($id: ID!, $after: String) {
  account(id: $id) {
    balance { available { amount } pendingRecharge { id } }
    transactions(first: 100, after: $after) {
      totalCount pageInfo { hasNextPage endCursor }
      edges { node { id kind amount { amount } balanceAfter { amount } } } }
    rechargeAttempts(first: 100) { totalCount edges { node { id status } } } } }"""


async def all_transactions(api: Api, account_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The account (from the first page) and every ledger entry, newest first."""
    first = (await api(LEDGER, {"id": account_id}))["account"]
    entries, page = [], first
    while True:
        entries += [edge["node"] for edge in page["transactions"]["edges"]]
        info = page["transactions"]["pageInfo"]
        if not info["hasNextPage"]:
            return first, entries
        page = (await api(LEDGER, {"id": account_id, "after": info["endCursor"]}))["account"]


async def usage_with_retries(api: Api, account_id: str, *, keys: int, retries: int,
                             amount: str) -> dict[str, list[dict[str, Any]]]:
    """`keys` recordUsage calls with distinct idempotency keys plus `retries` repeats of some of them, all sent
    at once; each answer's `recordUsage` (all were 200 without errors), grouped by idempotency key."""
    idempotency_keys = [f"call-{n}" for n in range(keys)] + [f"call-{n}" for n in range(0, keys, keys // retries)]
    responses = await asyncio.gather(*(
        api.post(RECORD_USAGE, {"id": account_id, "amount": amount, "key": k}) for k in idempotency_keys))
    outcomes: dict[str, list[dict[str, Any]]] = {}
    for k, response in zip(idempotency_keys, responses, strict=True):
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        outcomes.setdefault(k, []).append(body["data"]["recordUsage"])
    return outcomes


async def wait_for_recharge(api: Api, account_id: str, within: float = 15) -> dict[str, Any]:
    """Polls the balance (a real worker process is charging) until no recharge is pending and an
    AUTO_RECHARGE entry exists; returns BALANCE data read after that.

    The fields of one response are read in separate database transactions, so a response that races
    the settlement can mix states; the one read after the settlement was seen is the one to check."""
    deadline = time.monotonic() + within
    while True:
        data = await api(BALANCE, {"id": account_id})
        if data["balance"]["pendingRecharge"] is None and data["account"]["transactions"]["totalCount"] > 0:
            return await api(BALANCE, {"id": account_id})
        if time.monotonic() > deadline:
            pytest.fail(f"recharge not settled within {within} s: {data}")
        await asyncio.sleep(0.1)
