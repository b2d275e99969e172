"""Where a request's time goes, in process: CPU per request of the application itself, without HTTP or a load
generator. Run: python bench/breakdown.py [--profile DIR] [--postgres DSN]

Each scenario sends the same request sequentially, straight into the ASGI application (prod settings, uvloop as
under `serve`), on an SQLite database in a temporary directory, then on a PostgreSQL database of the run's own
(with PostgreSQL itself on the same machine, its CPU is not counted: compare SQLite's figures with SQLite's), and
divides the process's CPU time (all threads:
the database connections' threads too) by the number of requests. Bare Strawberry answering the balance from
memory (bench/baseline_app.py) is the floor. "key and account from memory" answers the balance read with the
API key and the account each read once and then served from memory: the difference to the real read is what the
database path costs (SQLAlchemy, the driver, the thread hops, the SQL; on PostgreSQL, the client side of it).
`--profile DIR` writes a cProfile of each scenario to DIR and prints its 12 costliest functions by own time
(cProfile inflates call-heavy code).
The figures go to bench/results/breakdown-<UTC>.json."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import baseline_app
import uvloop
from run import BALANCE, BATCH_ITEMS, RESULTS, USAGE, USAGE_BATCH, admin, cli, service_env

from credits_graphql.app import build_app, tune_garbage_collector
from credits_graphql.bootstrap import bootstrap
from credits_graphql.service import access, queries
from credits_graphql.settings import Settings

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
BATCH_WITHOUT_RESULTS = "mutation($in: RecordUsageBatchInput!) { recordUsageBatch(input: $in) { __typename } }"


async def call(app: App, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
    """One POST /graphql through the ASGI interface, as uvicorn would make it."""
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
    messages: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.Event().wait()  # the client stays connected until the response is sent
        received = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages[0]["status"], json.loads(b"".join(m.get("body", b"") for m in messages[1:]))


async def measure(name: str, app: App, bodies: list[dict[str, Any]], key: str | None, per: str,
                  profile_dir: Path | None) -> float:
    """CPU microseconds per request; the first tenth of `bodies` warms up and is not counted."""
    warm = max(len(bodies) // 10, 2)
    for body in bodies[:warm]:
        status, answer = await call(app, body, key)
        if status != 200 or "errors" in answer:
            raise RuntimeError(f"{name}: {status} {str(answer)[:300]}")
    counted = bodies[warm:]
    profiler = cProfile.Profile() if profile_dir else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for body in counted:
        await call(app, body, key)
    if profiler:
        profiler.disable()
    cost = (time.process_time() - started) / len(counted) * 1e6
    print(f"  {name:<52} {cost:>9.0f} µs CPU per {per}", flush=True)
    if profiler and profile_dir:
        path = profile_dir / f"{name.replace(' ', '-').replace(',', '')}.prof"
        profiler.dump_stats(path)
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(12)
    return cost


@contextmanager
def key_and_account_from_memory() -> Iterator[None]:
    """Each API key (with the account read with it) and each batch of accounts read from the database once, then
    answered from memory."""
    authenticate, accounts_by_id = access.authenticate_reading, queries.accounts_by_id
    principals: dict[tuple[str, int | None], Any] = {}
    accounts: dict[tuple[int, ...], Any] = {}

    async def remembered_principal(deps: Any, secret: str, account_id: int | None, key_reads: Any = None) -> Any:
        if (secret, account_id) not in principals:
            principals[secret, account_id] = await authenticate(deps, secret, account_id, key_reads)
        return principals[secret, account_id]

    async def remembered_accounts(deps: Any, org_id: int, ids: Any) -> Any:
        if tuple(ids) not in accounts:
            accounts[tuple(ids)] = await accounts_by_id(deps, org_id, ids)
        return accounts[tuple(ids)]

    access.authenticate_reading, queries.accounts_by_id = remembered_principal, remembered_accounts
    try:
        yield
    finally:
        access.authenticate_reading, queries.accounts_by_id = authenticate, accounts_by_id


async def service_costs(database: str, url: str, args: argparse.Namespace,
                        profile_dir: Path | None) -> dict[str, float]:
    """The scenarios on the service with its database at `url`, migrated and empty."""
    env = service_env(url)
    cli("migrate", env=env)
    org = cli("create-org", "breakdown", env=env)
    key = cli("create-api-key", "--org", org, "--role", "ADMIN", env=env)
    runtime = bootstrap(Settings.from_env(env))
    app = build_app(runtime, run_worker=False)
    tune_garbage_collector()
    costs: dict[str, float] = {}

    async def scenario(name: str, bodies: list[dict[str, Any]], per: str = "request") -> None:
        costs[name] = await measure(f"{database}: {name}", app, bodies, key, per, profile_dir)

    try:
        _, created = await call(app, {"query": 'mutation { createAccount(input: {name: "breakdown", '
                                      'currencyCode: "SEK", paymentMethod: {token: "tok_visa"}}) '
                                      "{ account { id } } }"}, key)
        account = created["data"]["createAccount"]["account"]["id"]
        for n in range(40):
            await call(app, {"query": 'mutation($id: ID!, $k: String!) { addFunds(input: {accountId: $id, '
                             'amount: "100000", idempotencyKey: $k}) { userErrors { code } } }',
                             "variables": {"id": account, "k": f"seed-{n}"}}, key)
        read = {"query": BALANCE, "variables": {"id": account}}

        def usage() -> dict[str, Any]:
            return {"accountId": account, "service": "DOMESTIC_CALLING", "amount": "0.01",
                    "idempotencyKey": uuid.uuid4().hex}

        await scenario("balance read", [read] * args.requests)
        with key_and_account_from_memory():
            await scenario("balance read, key and account from memory", [read] * args.requests)
        await scenario("recordUsage", [{"query": USAGE, "variables": {"in": usage()}}
                                       for _ in range(args.requests // 2)])
        batches = max(args.requests // 100, 10)
        for name, query in (("recordUsageBatch", USAGE_BATCH),
                            ("recordUsageBatch, results not selected", BATCH_WITHOUT_RESULTS)):
            bodies = [{"query": query, "variables": {"in": {"items": [usage() for _ in range(BATCH_ITEMS)]}}}
                      for _ in range(batches)]
            await scenario(name, bodies, f"batch of {BATCH_ITEMS}")
    finally:
        await runtime.close()
    return costs


async def main(args: argparse.Namespace) -> None:
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    print(f"breakdown: in process, sequential, {args.requests} requests per scenario", flush=True)
    floor = await measure("bare Strawberry, memory", baseline_app.app,
                          [{"query": BALANCE, "variables": {"id": "1"}}] * args.requests, None, "request", profile_dir)
    costs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        costs["sqlite"] = await service_costs("sqlite", f"sqlite+aiosqlite:///{directory}/breakdown.db", args,
                                              profile_dir)
    if args.postgres:
        name = f"credits_breakdown_{uuid.uuid4().hex[:8]}"
        await admin(args.postgres, f'CREATE DATABASE "{name}"')
        try:
            base = re.sub(r"^postgresql://", "postgresql+asyncpg://", args.postgres.rsplit("/", 1)[0])
            costs["postgresql"] = await service_costs("postgresql", f"{base}/{name}", args, profile_dir)
        finally:
            await admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for database, figures in costs.items():
        print(f"{database}, per request over bare Strawberry's: " + ", ".join(
            f"{name} {cost / floor:.1f}x" for name, cost in figures.items() if not name.startswith("recordUsageBatch")))
        print(f"{database}, recordUsageBatch: {BATCH_ITEMS / figures['recordUsageBatch'] * 1e6:,.0f} usage entries "
              "per CPU second")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"breakdown-{stamp}.json"
    out.write_text(json.dumps({"at": stamp, "requests": args.requests, "cpu_us": {
        "bare Strawberry, memory": floor, **{f"{database}: {name}": cost for database, figures in costs.items()
                                             for name, cost in figures.items()}}}, indent=2))
    print(f"results: {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario (a tenth warms up)")
    parser.add_argument("--profile", help="a directory for one cProfile file per scenario")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="an admin DSN; a database of the run's own is created and dropped ('' skips)")
    uvloop.run(main(parser.parse_args()))
