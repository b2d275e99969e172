"""`make bench`: the real service against bare Strawberry, back to back on this machine.

For each scenario it runs wrk (Debian's package; bench/load.lua) `--runs` times against one process and as many
against `serve --workers 2` (both up at once, their runs in turns) and keeps each's median run; prints a table
and, last, one line of ratios to the baseline (and of `serve --workers 2` to one process on each database: the
scale-out factor; and the batches' usage entries per second); writes the figures
to bench/results/<UTC time>.json. Absolute numbers vary between machines; the ratios are what to compare.
The baseline runs in two processes too: its scale-out is what two processes can get on this machine's cores with
no database. Each run also reads from /proc the CPU that the service, PostgreSQL and wrk spent per request
(bench/cpu_use.py), printed as a table before the last line; from one process's, each scale-out factor gets the
ceiling the machine allows it (in brackets)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cpu_use import CpuPerRequest, per_request, snapshot

from credits_graphql.bootstrap import bootstrap
from credits_graphql.domain.access import Role
from credits_graphql.service import access
from credits_graphql.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "credits-graphql"
PYTHON = ROOT / ".venv" / "bin" / "python"
LOAD = ROOT / "bench" / "load.lua"
# wrk sends from one thread in C: on these two cores it took about 20 µs of CPU per request, where autocannon (one
# Node.js process) took about 43 µs, CPU that `serve --workers 2` and PostgreSQL would otherwise have.
LOAD_TIMEOUT = "30s"  # a 1000-item batch waits in line behind the others: seconds on a slow machine
RESULTS = ROOT / "bench" / "results"

BALANCE = "query($id: ID!) { balance(accountId: $id) { available { amount currencyCode } } }"
USAGE = ("mutation($in: RecordUsageInput!) { recordUsage(input: $in) { transaction { id } "
         "userErrors { code } } }")
USAGE_BATCH = ("mutation($in: RecordUsageBatchInput!) { recordUsageBatch(input: $in) { results { "
               "transaction { id } userErrors { code } } } }")
BATCH_ITEMS = 1000
# A partner sends batches over a few connections; 32 concurrent 1000-item batches only queue (seconds each)
# and hit the load generator's timeout, whose abandoned requests the server still works through. With 8, each of
# `serve --workers 2`'s processes gets a share (the kernel spreads connections by hash: 4 could all land on one).
BATCH_CONNECTIONS = 8
SPREAD_ACCOUNTS = 100
ORGANIZATIONS = 100
SCALE_OUT_WORKERS = 2  # each database is measured with `serve --workers 2` too: the scale-out factor
BASELINE = "baseline: bare Strawberry, memory"
BASELINE_SCALED_OUT = f"baseline, {SCALE_OUT_WORKERS} processes: bare Strawberry, memory"


@dataclass
class Figures:
    scenario: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    entries_per_second: float | None = None  # batch scenarios: usage entries ingested
    failed: int = 0  # answers with a GraphQL error or a user error: a run with any measured something else
    cpu: CpuPerRequest | None = None


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], port: int, servers: int = 1) -> Iterator[Server]:
    """`servers`: how many server processes must have started (uvicorn logs each) before the load begins."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    popen = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (httpx.post(f"{url}/graphql", json={"query": "{ __typename }"}, timeout=1).status_code < 500
                        and (servers == 1 or Path(log.name).read_text().count("startup complete") >= servers)):
                    break
            except httpx.TransportError:
                pass
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        yield Server(url, popen.pid)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            popen.kill()
        os.unlink(log.name)


def load(name: str, server: Server, body: dict[str, Any], key: str | None, *, connections: int, duration: int,
         accounts: list[str] | None = None) -> Figures:
    """One run of wrk (bench/load.lua); `__ID__` in the body becomes a fresh id in every request, and `__ACCOUNT__`
    the next of `accounts` in turn (a line "<account id> <API key>": sent with that key instead of `key`). With the
    CPU each party spent per request meanwhile."""
    with tempfile.TemporaryDirectory() as directory:
        body_file, accounts_file = Path(directory) / "body.json", Path(directory) / "accounts"
        body_file.write_text(json.dumps(body))  # a 1000-item batch is more than an argument may hold
        if accounts:
            accounts_file.write_text("\n".join(accounts))
        before = snapshot(server.pid)
        run = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", LOAD_TIMEOUT, "-s", str(LOAD),
             f"{server.url}/graphql", "--", str(body_file), uuid.uuid4().hex, key or "",
             *([str(accounts_file)] if accounts else [])], capture_output=True, text=True, check=True)
        after = snapshot(server.pid)
    raw = json.loads(run.stdout.strip().splitlines()[-1])
    return Figures(name, raw["requests"] / raw["seconds"], raw["p50_us"] / 1000, raw["p99_us"] / 1000, raw["non2xx"],
                   raw["errors"], failed=raw["failed"], cpu=per_request(before, after, raw["requests"]))


Target = tuple[str, Server, dict[str, Any], str | None, list[str] | None]
"""A scenario on one server: its name, the server, the body, the API key, the accounts for `__ACCOUNT__`."""


def measure(targets: list[Target], args: argparse.Namespace, items: int | None = None,
            connections: int | None = None) -> list[Figures]:
    """`args.runs` runs of each target, in turns (one run of each, then again), so that a machine that slows down or
    speeds up during the bench weighs on each alike; for each, the median run."""
    runs: list[list[Figures]] = [[] for _ in targets]
    for _ in range(args.runs):
        for (name, server, body, key, accounts), done in zip(targets, runs, strict=True):
            done.append(load(name, server, body, key, connections=connections or args.connections,
                             duration=args.duration, accounts=accounts))
    return [median_run(done, items) for done in runs]


def median_run(runs: list[Figures], items: int | None) -> Figures:
    median = statistics.median(r.requests_per_second for r in runs)
    chosen = min(runs, key=lambda r: abs(r.requests_per_second - median))
    if items is not None:
        chosen.entries_per_second = chosen.requests_per_second * items
    print(f"  {chosen.scenario:<60} {chosen.requests_per_second:>9.0f} req/s  p50 {chosen.p50_ms:>6.1f} ms  "
          f"p99 {chosen.p99_ms:>6.1f} ms  non-2xx {chosen.non_2xx}"
          + (f"  FAILED ANSWERS {chosen.failed}" if chosen.failed else "")
          + (f"  {chosen.entries_per_second:.0f} entries/s" if items is not None else ""), flush=True)
    return chosen


@contextmanager
def bare_strawberry(processes: int = 1) -> Iterator[Server]:
    port = free_port()
    with process([str(PYTHON), str(ROOT / "bench" / "baseline_app.py"), str(port), str(processes)],
                 dict(os.environ), port, servers=processes) as server:
        yield server


def cli(*args: str, env: dict[str, str]) -> str:
    run = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return run.stdout.strip().splitlines()[-1]


def service_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITS_")}
    env.update(CREDITS_DATABASE_URL=database_url, CREDITS_ENV="prod", CREDITS_RATE_LIMIT_PER_SECOND="0")
    return env


def seed(url: str, key: str, *, accounts: int = 1, deposits: int = 20) -> list[str]:
    """Accounts with funds for every usage request of the run; returns their ids."""
    def call(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables},
                              headers={"authorization": f"Bearer {key}"}, timeout=30)
        data: dict[str, Any] = response.json()["data"]
        return data

    ids: list[str] = []
    for _ in range(accounts):
        account = call("mutation { createAccount(input: {name: \"bench\", currencyCode: \"SEK\", "
                       "paymentMethod: {token: \"tok_visa\"}}) { account { id } } }", {})["createAccount"]["account"]
        for n in range(deposits):
            call("mutation($id: ID!, $k: String!) { addFunds(input: {accountId: $id, amount: \"100000\", "
                 "idempotencyKey: $k}) { userErrors { code } } }", {"id": account["id"], "k": f"seed-{n}"})
        ids.append(account["id"])
    return ids


@dataclass(frozen=True)
class Served:
    name: str
    server: Server
    key: str
    account: str
    spread: list[str]
    """Accounts of the key's organization."""
    organizations: list[str]
    """An account in each of as many organizations, each with an API key: "<account id> <API key>"."""


def organizations(env: dict[str, str], url: str, count: int) -> list[str]:
    """`count` organizations, each with an ADMIN key and an account with funds: "<account id> <API key>" each (made
    in process: `credits-graphql create-org` and `create-api-key` start a Python each, seconds for a hundred)."""
    async def keys() -> list[str]:
        runtime = bootstrap(Settings.from_env(env))
        try:
            made = []
            for n in range(count):
                org = await access.create_organization(runtime.deps, f"bench {n}")
                made.append((await access.create_api_key(runtime.deps, org.id, Role.ADMIN))[1])
            return made
        finally:
            await runtime.close()

    return [f"{seed(url, key, deposits=2)[0]} {key}" for key in asyncio.run(keys())]


@contextmanager
def served(name: str, database_url: str, workers: int = 1) -> Iterator[Served]:
    """`serve` on a database with an organization, an API key and accounts of its own; `workers` > 1: `serve
    --workers N`."""
    env = service_env(database_url)
    cli("migrate", env=env)
    org = cli("create-org", "bench", env=env)
    key = cli("create-api-key", "--org", org, "--role", "ADMIN", env=env)
    port = free_port()
    serve = [str(CLI), "serve", "--port", str(port), *(["--workers", str(workers)] if workers > 1 else [])]
    with process(serve, env, port, servers=workers) as server:
        [account] = seed(server.url, key)
        yield Served(name, server, key, account, seed(server.url, key, accounts=SPREAD_ACCOUNTS, deposits=2),
                     organizations(env, server.url, ORGANIZATIONS))


def service(database: str, database_url: str, scaled_out_database_url: str, args: argparse.Namespace) -> list[Figures]:
    """The scenarios on one process and on `serve --workers 2`, both up at once, their runs in turns: the scale-out
    factor compares runs made minutes apart at most."""
    with (served(database, database_url) as one,
          served(f"{database}, serve --workers {SCALE_OUT_WORKERS}", scaled_out_database_url,
                 SCALE_OUT_WORKERS) as several):
        servers = (one, several)

        def usage(account: str, key: str = "__ID__") -> dict[str, Any]:
            return {"accountId": account, "service": "DOMESTIC_CALLING", "amount": "0.01", "idempotencyKey": key}

        figures = measure([(f"{s.name}: balance read", s.server, {"query": BALANCE, "variables": {"id": s.account}},
                            s.key, None) for s in servers], args)
        figures += measure([(f"{s.name}: recordUsage", s.server,
                             {"query": USAGE, "variables": {"in": usage(s.account)}}, s.key, None) for s in servers],
                           args)
        # As partners report it: each request on one of many accounts, which commit in parallel (on one account
        # every write waits for the row lock, whatever the number of processes).
        figures += measure([(f"{s.name}: recordUsage, {SPREAD_ACCOUNTS} accounts", s.server,
                             {"query": USAGE, "variables": {"in": usage("__ACCOUNT__")}}, s.key, s.spread)
                            for s in servers], args)
        # As a platform reports it for its many customers: each request an organization's own, whose group commits
        # (one organization's reports at a time, service/usage_combiner.py) run side by side.
        figures += measure([(f"{s.name}: recordUsage, {ORGANIZATIONS} organizations", s.server,
                             {"query": USAGE, "variables": {"in": usage("__ACCOUNT__")}}, s.key, s.organizations)
                            for s in servers], args)
        figures += measure([(f"{s.name}: recordUsageBatch ({BATCH_ITEMS} items)", s.server, {
            "query": USAGE_BATCH, "variables": {"in": {"items": [
                usage(s.account, f"__ID__-{n}") for n in range(BATCH_ITEMS)]}}}, s.key, None) for s in servers],
            args, items=BATCH_ITEMS, connections=min(args.connections, BATCH_CONNECTIONS))
    return figures


def scale_out_pairs(figures: list[Figures]) -> dict[str, tuple[Figures, Figures]]:
    """Each request kind's run on one process and on `serve --workers N` (for the baseline, N uvicorn workers)."""
    by_scenario = {f.scenario: f for f in figures}
    names = {"baseline (bare Strawberry)": (BASELINE, BASELINE_SCALED_OUT)}
    for database in ("sqlite", "postgresql"):
        for kind in ("balance read", "recordUsage", f"recordUsage, {SPREAD_ACCOUNTS} accounts",
                     f"recordUsage, {ORGANIZATIONS} organizations", f"recordUsageBatch ({BATCH_ITEMS} items)"):
            names[f"{database} {kind}"] = (f"{database}: {kind}",
                                           f"{database}, serve --workers {SCALE_OUT_WORKERS}: {kind}")
    return {name: (by_scenario[one], by_scenario[several]) for name, (one, several) in names.items()
            if one in by_scenario and several in by_scenario}


def scale_out_factors(figures: list[Figures]) -> dict[str, float]:
    """Requests per second with `serve --workers N` over those of one process, per database and request kind."""
    return {name: several.requests_per_second / one.requests_per_second
            for name, (one, several) in scale_out_pairs(figures).items()}


def scale_out_ceilings(figures: list[Figures], cores: int) -> dict[str, float]:
    """The factor N processes would reach if each request cost them the CPU it cost one process: each process can
    use a core at most, and all of them, the database and the load generator share the machine's `cores`. With
    the database and wrk on the same cores, it stays below N even for a service that scales perfectly; it is the
    ceiling to hold a scale-out factor against (bench/cpu_use.py)."""
    ceilings = {}
    for name, (one, _) in scale_out_pairs(figures).items():
        if one.cpu is None or not one.cpu.service_us:
            continue
        service = one.cpu.service_us
        others = one.cpu.database_us + one.cpu.load_generator_us
        most = min(SCALE_OUT_WORKERS / service, cores / (service + others)) * 1e6
        ceilings[name] = most / one.requests_per_second
    return ceilings


def cpu_table(figures: list[Figures]) -> None:
    print("CPU per request (per batch for batches) in µs, from /proc, and the cores left idle:")
    for f in figures:
        if f.cpu is not None:
            print(f"  {f.scenario:<60} service {f.cpu.service_us:>7.0f}  database {f.cpu.database_us:>6.0f}  "
                  f"wrk {f.cpu.load_generator_us:>5.0f}  idle {f.cpu.idle_cores:.2f} cores")


async def admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is kept")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="an admin DSN; a database of the run's own is created and dropped ('' skips)")
    args = parser.parse_args()
    print(f"bench: {args.runs} x {args.duration} s per scenario, {args.connections} connections, "
          f"{os.cpu_count()} cores", flush=True)

    balance = {"query": BALANCE, "variables": {"id": "1"}}
    with bare_strawberry() as one, bare_strawberry(SCALE_OUT_WORKERS) as several:
        # Its own scale-out on the same cores: how far two processes can go here with no database at all.
        figures = measure([(BASELINE, one, balance, None, None), (BASELINE_SCALED_OUT, several, balance, None, None)],
                          args)
    baseline = figures[0]
    with tempfile.TemporaryDirectory() as directory:
        # `serve --workers 2` shares its file between its processes: SQLite takes one writer at a time, across
        # processes too.
        figures += service("sqlite", f"sqlite+aiosqlite:///{directory}/bench.db",
                           f"sqlite+aiosqlite:///{directory}/two.db", args)
    if args.postgres:
        name = f"credits_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
        try:
            base = re.sub(r"^postgresql://", "postgresql+asyncpg://", args.postgres.rsplit("/", 1)[0])
            figures += service("postgresql", f"{base}/{name}", f"{base}/{name}", args)
        finally:
            asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    ratios = {f.scenario: f.requests_per_second / baseline.requests_per_second for f in figures
              if f.scenario not in (BASELINE, BASELINE_SCALED_OUT) and f.entries_per_second is None}
    scale_out = scale_out_factors(figures)
    ceilings = scale_out_ceilings(figures, os.cpu_count() or 1)
    cpu_table(figures)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps({"at": stamp, "args": vars(args), "figures": [asdict(f) for f in figures],
                               "ratios": ratios, "scale_out": scale_out,
                               "scale_out_ceiling": ceilings}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    line = "ratios to baseline: " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
    if scale_out:
        line += (f"; scale-out with serve --workers {SCALE_OUT_WORKERS} (over 1; in brackets, the ceiling at one "
                 "process's CPU per request): " + ", ".join(
                     f"{name} {factor:.2f}" + (f" ({ceilings[name]:.2f})" if name in ceilings else "")
                     for name, factor in scale_out.items()))
    line += "; usage entries/s in batches: " + ", ".join(
        f"{f.scenario.split(':')[0]} {f.entries_per_second:.0f}" for f in figures if f.entries_per_second)
    print(line)


if __name__ == "__main__":
    sys.exit(main())
