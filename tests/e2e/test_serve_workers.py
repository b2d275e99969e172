"""`credits-graphql serve --workers 2`: two server processes on one port, each with its own inline recharge
worker, on SQLite and on PostgreSQL. Concurrent usage keeps the ledger exact and charges each idempotency key
once, each recharge is credited once, dev mode's set-up runs once, and SIGTERM stops every process with 0."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    START_TIMEOUT_SECONDS,
    Api,
    Launcher,
    Process,
    Server,
    all_transactions,
    cli_env,
    create_org_and_key,
    free_port,
    funded_account_with_auto_recharge,
    migrated,
    run_cli,
    start_server,
    usage_with_retries,
)

pytestmark = pytest.mark.slow

WORKERS = 2
KEYS = 100
RETRIES = 20
USAGE = Decimal("1.50")
FUNDS = Decimal(100)
RECHARGE = Decimal(50)
SETTLE_WITHIN_SECONDS = 20
CONNECTIONS = 32

def _server_processes(process: Process, count: int) -> list[tuple[int, str]]:
    """Waits until `count` server processes have finished starting (uvicorn logs each); returns each one's
    pid with its start time (/proc), which tells it apart from a later process given the same pid."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while process.stderr.count("Application startup complete.") < count:
        if process.popen.poll() is not None:
            pytest.fail(f"serve ended while its processes were starting: {process.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{count} server processes not started within {START_TIMEOUT_SECONDS} s: {process.describe()}")
        time.sleep(0.05)
    pids = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", process.stderr)]
    assert len(pids) == count, process.describe()
    found = []
    for pid in pids:
        stat = _stat(pid)
        assert stat is not None, f"server process {pid} is not running: {process.describe()}"
        assert int(stat[1]) == process.popen.pid, f"{pid} is not a child of serve: {process.describe()}"
        found.append((pid, stat[19]))
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat fields from the state on (state, ppid, ...), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()


def _established_connections(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to `port` each process holds (from /proc)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if local_port == port and state == "01":  # TCP_ESTABLISHED
                sockets.add(f"socket:[{inode}]")
    counts = {}
    for pid in pids:
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.append(fd.readlink().name)
            except FileNotFoundError:  # closed while listed
                continue
        counts[pid] = sum(link in sockets for link in links)
    return counts


def _still_running(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[19] == started and stat[0] != "Z"


async def _settled_ledger(api: Api, account_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ledger once no recharge is pending (the servers' inline workers settle them)."""
    deadline = time.monotonic() + SETTLE_WITHIN_SECONDS
    while True:
        account, entries = await all_transactions(api, account_id)
        if account["balance"]["pendingRecharge"] is None:
            return account, entries
        if time.monotonic() > deadline:
            pytest.fail(f"recharge still pending after {SETTLE_WITHIN_SECONDS} s: {account}")
        await asyncio.sleep(0.1)


def _assert_all_stop_on_sigterm(server: Server, children: list[tuple[int, str]]) -> None:
    status = server.process.terminate()
    assert status == 0, server.process.describe()
    assert server.process.stderr.count("Application shutdown complete.") == len(children), server.process.describe()
    left = [pid for pid, started in children if _still_running(pid, started)]
    assert left == [], f"server processes left running after serve exited: {left}"


async def test_two_processes_record_concurrent_usage_once_per_key_and_stop_on_sigterm(
        tmp_path: Path, any_database_url: str, launch: Launcher) -> None:
    url = migrated(any_database_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    server = start_server(launch, cli_env(url), "--workers", str(WORKERS))  # inline recharge worker in each
    children = _server_processes(server.process, WORKERS)
    limits = httpx.Limits(max_connections=KEYS + RETRIES)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
        api = Api(client, key)
        account_id = await funded_account_with_auto_recharge(api, funds=str(FUNDS), recharge_amount=str(RECHARGE),
                                                             trigger="20")
        outcomes = await usage_with_retries(api, account_id, keys=KEYS, retries=RETRIES, amount=str(USAGE))
        assert len(outcomes) == KEYS
        assert sum(len(results) > 1 for results in outcomes.values()) == RETRIES

        charged: dict[str, str] = {}
        for k, results in outcomes.items():
            ids = {r["transaction"]["id"] for r in results if r["transaction"]}
            errors = [error["code"] for r in results for error in r["userErrors"]]
            assert len(ids) <= 1, f"{k} moved money more than once: {results}"
            if ids:
                charged[k] = ids.pop()
            # A refusal does not use the key up: a copy refused before a recharge landed may be followed
            # by one that succeeds after it.
            assert set(errors) <= {"INSUFFICIENT_FUNDS"}, results

        account, entries = await _settled_ledger(api, account_id)
        balance = Decimal(account["balance"]["available"]["amount"])
        assert len(entries) == account["transactions"]["totalCount"]
        assert len({entry["id"] for entry in entries}) == len(entries)
        assert sum(Decimal(entry["amount"]["amount"]) for entry in entries) == balance
        assert Decimal(entries[0]["balanceAfter"]["amount"]) == balance
        usage = [entry for entry in entries if entry["kind"] == "USAGE"]
        assert sorted(entry["id"] for entry in usage) == sorted(charged.values()), "one entry per charged key"
        assert {entry["amount"]["amount"] for entry in usage} == {f"-{USAGE:.2f}"}

        succeeded = [edge["node"]["id"] for edge in account["rechargeAttempts"]["edges"]
                     if edge["node"]["status"] == "SUCCEEDED"]
        assert succeeded, "the usage crossed the trigger: at least one recharge"
        recharges = [entry for entry in entries if entry["kind"] == "AUTO_RECHARGE"]
        assert len(recharges) == len(succeeded), "each recharge credited once"
        assert {entry["amount"]["amount"] for entry in recharges} == {f"{RECHARGE:.2f}"}
        assert balance == FUNDS + RECHARGE * len(recharges) - USAGE * len(charged)

    _assert_all_stop_on_sigterm(server, children)


async def test_dev_mode_sets_up_once_for_all_processes(tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    url = migrated(sqlite_url, tmp_path)
    server = start_server(launch, cli_env(url, CREDITS_ENV="dev"), "--workers", str(WORKERS))
    children = _server_processes(server.process, WORKERS)
    assert server.dev_key, server.process.stdout
    assert server.process.stdout.count("Dev mode: created organization") == 1, server.process.stdout
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "graphiql" in page.text.lower()
        assert await Api(client, server.dev_key)("{ accounts { totalCount } }") == {"accounts": {"totalCount": 0}}
    next_org = run_cli("create-org", "Another", env=cli_env(url), cwd=tmp_path)
    assert next_org.returncode == 0, next_org.stderr
    assert next_org.last_line == "2", "the demo organization is the only one created before"

    _assert_all_stop_on_sigterm(server, children)


def test_serve_stops_with_an_error_when_its_processes_cannot_start(tmp_path: Path, sqlite_url: str) -> None:
    """Rather than restarting them forever. (The sandbox journal is opened as each process builds its app; a
    directory is none.)"""
    env = cli_env(migrated(sqlite_url, tmp_path), CREDITS_SANDBOX_JOURNAL=str(tmp_path))
    result = run_cli("serve", "--port", str(free_port()), "--workers", str(WORKERS), env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "a server process could not start" in result.stderr
    assert "could not build the application" in result.stderr


def test_workers_must_be_a_positive_number(tmp_path: Path, sqlite_url: str) -> None:
    result = run_cli("serve", "--workers", "0", env=cli_env(sqlite_url), cwd=tmp_path)
    assert result.returncode == 2
    assert "--workers: expected a positive number, got '0'" in result.stderr


async def test_connections_opened_at_once_are_spread_over_the_processes(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    """A burst of keep-alive connections (a partner's pool, a proxy's upstream pool): each process takes a
    share. On one shared socket, the first process to wake accepted nearly all of them (32/0, 31/1 seen)."""
    url = migrated(sqlite_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    server = start_server(launch, cli_env(url), "--workers", str(WORKERS))
    children = _server_processes(server.process, WORKERS)
    port = int(server.base_url.rsplit(":", 1)[1])
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
        api = Api(client, key)
        answers = await asyncio.gather(*(api("{ accounts { totalCount } }") for _ in range(CONNECTIONS)))
        assert answers == [{"accounts": {"totalCount": 0}}] * CONNECTIONS
        held = _established_connections(port, [pid for pid, _ in children])
    assert sum(held.values()) >= CONNECTIONS // 2, held
    # Spread by the kernel (a hash per connection): fewer than 4 of 32 on a process has odds of about 1e-6.
    assert all(count >= 4 for count in held.values()), held

    _assert_all_stop_on_sigterm(server, children)


def test_serve_stops_with_an_error_when_its_port_is_taken(tmp_path: Path, sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--workers", str(WORKERS),
                         env=cli_env(migrated(sqlite_url, tmp_path)), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


async def test_a_second_serve_with_workers_on_the_same_port_stops_with_an_error_and_takes_no_connection(
        tmp_path: Path, sqlite_url: str, launch: Launcher) -> None:
    """SO_REUSEPORT alone let a second `serve --workers` (another database, an older release) join the port: the
    kernel then sent it a share of the connections (401, 200, 200, 401, ... seen)."""
    url = migrated(sqlite_url, tmp_path)
    _, key = create_org_and_key(url, tmp_path)
    server = start_server(launch, cli_env(url), "--workers", str(WORKERS))
    children = _server_processes(server.process, WORKERS)
    port = int(server.base_url.rsplit(":", 1)[1])
    other = tmp_path / "other"
    other.mkdir()
    result = run_cli("serve", "--port", str(port), "--workers", str(WORKERS),
                     env=cli_env(migrated(sqlite_url.replace(str(tmp_path), str(other)), other)), cwd=other)
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        answers = await asyncio.gather(*(Api(client, key)("{ accounts { totalCount } }") for _ in range(8)))
    assert answers == [{"accounts": {"totalCount": 0}}] * 8  # every answer from the first server's database

    _assert_all_stop_on_sigterm(server, children)


def test_a_server_process_started_on_an_unmigrated_database_stops_them_all(
        tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """What each process of `serve --workers N` runs (the database may have changed since `serve` checked it)."""
    from uvicorn.config import STARTUP_FAILURE

    from credits_graphql.app import app_from_env

    monkeypatch.setenv("CREDITS_DATABASE_URL", sqlite_url)
    with pytest.raises(SystemExit) as stopped:
        app_from_env()
    assert stopped.value.code == STARTUP_FAILURE
    assert "could not start: database schema is at revision none, this release needs 0008: " \
           "run credits-graphql migrate" in caplog.messages
