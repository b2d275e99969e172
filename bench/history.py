"""`make bench`, part 2: does a read cost the same with 1,000 or 1,000,000 ledger entries behind it?

For SQLite (a temp file) and PostgreSQL (a database of the run's own), it migrates and creates an org and an
ADMIN key with the CLI, then grows one account's history step by step (1k -> 10k -> 100k -> 1M entries) and the
org's account list (up to 10,000), seeding in bulk with SQL: a valid ledger (running `balance_after`, the
account's balance equal to the sum of its entries). One `serve` (prod settings) per database runs throughout;
at each size it times plain sequential requests, all queries round-robin: latency against history size, not
throughput. Prints a table with the ratio at the largest size to the smallest (raw, corrected for machine load
by an anchor request that reads no data, and of the store's SQL alone); writes
bench/results/history-<UTC>.json and a PNG plot (latency against entries) beside it.

`totalCount` reads the per-kind entry counters kept on the account row (migration 0004), so it is in the flat
set too; before them it was a COUNT(*) over the account's history (29 ms on SQLite and 86 ms on PostgreSQL at
1M entries, bench/results/history-20261125T170924Z.json)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
from run import CLI, RESULTS, ROOT, admin, cli, free_port, process, service_env

SIZES = (1_000, 10_000, 100_000, 1_000_000)
MAX_ACCOUNTS = 10_000
PAGE = 20
DEEP_PAGE = 900
FLAT_TOLERANCE = 1.10
CURRENCY = "SEK"
FUNDS_MICROS = 100_000_000  # every 100th entry adds 100 SEK; the 99 between use 1 SEK each: never negative
USAGE_MICROS = -1_000_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

TRANSACTIONS = ("query($id: ID!, $after: String) { transactions(accountId: $id, first: 20, after: $after) { "
                "edges { cursor node { id kind amount { amount currencyCode } balanceAfter { amount } service "
                "occurredAt } } pageInfo { hasNextPage endCursor } } }")
QUERIES: dict[str, str] = {
    "balance": "query($id: ID!) { balance(accountId: $id) { available { amount currencyCode } belowTrigger } }",
    "first page": TRANSACTIONS,
    "first page + totalCount": TRANSACTIONS.replace("pageInfo {", "totalCount pageInfo {"),
    "deep page": TRANSACTIONS,
    "accounts(first: 100)": ("query { accounts(first: 100) { edges { cursor node { id name currencyCode status "
                             "balance { available { amount } } } } pageInfo { hasNextPage endCursor } } }"),
}
# No data read at all (auth and GraphQL only): timed in the same rounds, it shows how busy the machine was, so
# a ratio can be corrected for load from elsewhere: (query / anchor at 1M) / (query / anchor at 1k).
ANCHOR = "{ __typename }"
# Drawn in the plot's right-hand panel: totalCount reads the account's per-kind entry counters (migration 0004).
WITH_TOTAL_COUNT = {"first page + totalCount"}


def accounts_at(entries: int) -> int:
    """The org's account count grows with history too: 100 (a full accounts page) up to 10,000 at 1M entries."""
    return min(MAX_ACCOUNTS, max(100, entries // 100))


def encode_cursor(account_id: int, entry_id: int) -> str:
    """As api/ids.py encode_cursor for the account's transactions (the bench only talks to the API over HTTP)."""
    return base64.urlsafe_b64encode(f"k2:transactions.{account_id}:{entry_id}".encode()).decode()


@dataclass
class Ledger:
    """The history account's running state, so each step continues the same valid ledger."""

    entries: int = 0
    balance_micros: int = 0
    funds_entries: int = 0

    def grow(self, count: int) -> Iterator[tuple[Any, ...]]:
        """(kind, amount, balance_after, service, minutes, reference, occurred_at, idempotency_key, hash)."""
        for n in range(self.entries, self.entries + count):
            funds = n % 100 == 0
            amount = FUNDS_MICROS if funds else USAGE_MICROS
            self.balance_micros += amount
            self.funds_entries += funds
            yield ("FUNDS_ADDED" if funds else "USAGE", amount, self.balance_micros,
                   None if funds else "DOMESTIC_CALLING", None if funds else 1, f"call-{n}",
                   EPOCH + timedelta(seconds=n), f"seed-{n}", f"{n:064x}")
        self.entries += count


class Seeder(Protocol):
    async def add_accounts(self, org_id: int, count: int) -> list[int]: ...
    async def add_entries(self, account_id: int, ledger: Ledger, count: int) -> None: ...
    async def entry_id_at(self, account_id: int, newest_offset: int) -> int: ...
    async def sql_medians_us(self, org_id: int, account_id: int, deep_id: int, repeat: int) -> dict[str, float]: ...
    async def close(self) -> None: ...


def _account_row(org_id: int, n: int) -> tuple[Any, ...]:
    at = EPOCH + timedelta(seconds=n)
    return (org_id, f"account {n}", CURRENCY, "ACTIVE", 0, at, "DISABLED", 0, "tok_visa", "visa", "4242", at)


_ACCOUNT_COLUMNS = ("org_id", "name", "currency", "status", "balance_micros", "created_at", "recharge_status",
                    "recharge_failures", "payment_token", "payment_brand", "payment_last4", "payment_updated_at")
_ENTRY_COLUMNS = ("account_id", "kind", "amount_micros", "balance_after_micros", "currency", "service", "minutes",
                  "reference", "occurred_at", "created_at", "idempotency_key", "request_hash")


# The statements the store runs for these reads (store/repositories.py), timed without HTTP or GraphQL around them.
SQL = {
    "balance": "SELECT * FROM accounts WHERE id = :account",
    "first page": "SELECT * FROM ledger_entries WHERE account_id = :account ORDER BY id DESC LIMIT 21",
    "first page + totalCount": ("SELECT funds_added_entries + auto_recharge_entries + usage_entries "
                                "FROM accounts WHERE id = :account"),
    "deep page": ("SELECT * FROM ledger_entries WHERE account_id = :account AND id < :deep "
                  "ORDER BY id DESC LIMIT 21"),
    "accounts(first: 100)": "SELECT * FROM accounts WHERE org_id = :org ORDER BY id DESC LIMIT 101",
}


def _median_us(run: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def _entry_row(account_id: int, row: tuple[Any, ...]) -> tuple[Any, ...]:
    kind, amount, after, service, minutes, reference, at, key, request_hash = row
    return (account_id, kind, amount, after, CURRENCY, service, minutes, reference, at, at, key, request_hash)


class SqliteSeeder:
    """One transaction per step through the stdlib driver; timestamps in SQLAlchemy's SQLite text format."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)

    @staticmethod
    def _text(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
                     for v in row)

    def _insert(self, table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                             (self._text(row) for row in rows))

    async def add_accounts(self, org_id: int, count: int) -> list[int]:
        start = self._db.execute("SELECT count(*) FROM accounts").fetchone()[0]
        self._insert("accounts", _ACCOUNT_COLUMNS, (_account_row(org_id, start + n) for n in range(count)))
        self._db.execute("COMMIT")
        rows = self._db.execute("SELECT id FROM accounts ORDER BY id DESC LIMIT ?", (count,)).fetchall()
        return sorted(r[0] for r in rows)

    async def add_entries(self, account_id: int, ledger: Ledger, count: int) -> None:
        self._insert("ledger_entries", _ENTRY_COLUMNS, (_entry_row(account_id, r) for r in ledger.grow(count)))
        self._db.execute("UPDATE accounts SET balance_micros = ?, funds_added_entries = ?, usage_entries = ? "
                         "WHERE id = ?", (ledger.balance_micros, ledger.funds_entries,
                                          ledger.entries - ledger.funds_entries, account_id))
        self._db.execute("COMMIT")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def entry_id_at(self, account_id: int, newest_offset: int) -> int:
        row = self._db.execute("SELECT id FROM ledger_entries WHERE account_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                               (account_id, newest_offset)).fetchone()
        return int(row[0])

    async def sql_medians_us(self, org_id: int, account_id: int, deep_id: int, repeat: int) -> dict[str, float]:
        values = {"org": org_id, "account": account_id, "deep": deep_id}
        return {name: _median_us(lambda sql=sql: self._db.execute(sql, values).fetchall(), repeat)
                for name, sql in SQL.items()}

    async def close(self) -> None:
        self._db.close()


class PostgresSeeder:
    """COPY (asyncpg copy_records_to_table) in one transaction per step, then ANALYZE, as autovacuum soon would."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    @classmethod
    async def connect(cls, dsn: str) -> PostgresSeeder:
        return cls(await asyncpg.connect(dsn))

    async def add_accounts(self, org_id: int, count: int) -> list[int]:
        start = await self._db.fetchval("SELECT count(*) FROM accounts")
        await self._db.copy_records_to_table("accounts", columns=_ACCOUNT_COLUMNS,
                                             records=[_account_row(org_id, start + n) for n in range(count)])
        await self._db.execute("ANALYZE accounts")
        rows = await self._db.fetch("SELECT id FROM accounts ORDER BY id DESC LIMIT $1", count)
        return sorted(r["id"] for r in rows)

    async def add_entries(self, account_id: int, ledger: Ledger, count: int) -> None:
        rows = (_entry_row(account_id, r) for r in ledger.grow(count))
        async with self._db.transaction():
            while chunk := [row for _, row in zip(range(100_000), rows, strict=False)]:
                await self._db.copy_records_to_table("ledger_entries", columns=_ENTRY_COLUMNS, records=chunk)
            await self._db.execute("UPDATE accounts SET balance_micros = $1, funds_added_entries = $2, "
                                   "usage_entries = $3 WHERE id = $4", ledger.balance_micros,
                                   ledger.funds_entries, ledger.entries - ledger.funds_entries, account_id)
        await self._db.execute("ANALYZE ledger_entries")

    async def entry_id_at(self, account_id: int, newest_offset: int) -> int:
        return int(await self._db.fetchval(
            "SELECT id FROM ledger_entries WHERE account_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
            account_id, newest_offset))

    async def sql_medians_us(self, org_id: int, account_id: int, deep_id: int, repeat: int) -> dict[str, float]:
        values = {"org": org_id, "account": account_id, "deep": deep_id}
        medians = {}
        for name, sql in SQL.items():
            names = re.findall(r":(\w+)", sql)
            positional = sql
            for number, name_in_sql in enumerate(names, start=1):
                positional = positional.replace(f":{name_in_sql}", f"${number}")
            statement = await self._db.prepare(positional)
            args = [values[n] for n in names]
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                await statement.fetch(*args)
                times.append((time.perf_counter() - start) * 1e6)
            medians[name] = statistics.median(times)
        return medians

    async def close(self) -> None:
        await self._db.close()


@dataclass
class Timing:
    database: str
    entries: int
    accounts: int
    query: str
    median_ms: float
    p90_ms: float
    detail: str
    anchor_ms: float = 0.0  # ANCHOR's median in the same rounds
    sql_us: float = 0.0  # the store's statement alone, median


def time_queries(client: httpx.Client, bodies: dict[str, dict[str, Any]], warmup: int,
                 samples: int) -> dict[str, list[float]]:
    """Round-robin, one request of each query per round, so load from elsewhere on the machine hits all alike."""
    for body in bodies.values():
        first = client.post("/graphql", json=body).json()
        if first.get("errors") or not first.get("data"):
            raise RuntimeError(f"{body['query'][:60]}... failed: {first}")
    times: dict[str, list[float]] = {name: [] for name in bodies}
    for round_number in range(warmup + samples):
        for name, body in bodies.items():
            start = time.perf_counter()
            response = client.post("/graphql", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            if round_number >= warmup:
                times[name].append(elapsed)
    return times


def gid(type_name: str, row_id: int) -> str:
    """A Relay global id, as strawberry.relay.GlobalID writes it."""
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def measure_size(url: str, key: str, database: str, ledger: Ledger, accounts: int, account: str,
                 deep_cursor: str, deep_depth: int, args: argparse.Namespace) -> list[Timing]:
    timings = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        balance = client.post("/graphql", json={"query": QUERIES["balance"], "variables": {"id": account}}).json()
        shown = balance["data"]["balance"]["available"]["amount"]
        if Decimal(shown) * 1_000_000 != ledger.balance_micros:  # the seeded ledger is what the API reads
            raise RuntimeError(f"balance {shown} != seeded {ledger.balance_micros / 1e6}")
        bodies, details = {}, {}
        for name, query in QUERIES.items():
            variables: dict[str, Any] = {"id": account}
            details[name] = ""
            if name == "deep page":
                variables["after"] = deep_cursor
                details[name] = f"page {deep_depth}"
            elif name == "first page + totalCount":
                total = client.post("/graphql", json={"query": query, "variables": variables}).json()
                details[name] = f"totalCount {total['data']['transactions']['totalCount']}"
            bodies[name] = {"query": query, "variables": variables}
        flat: dict[str, dict[str, Any]] = {"anchor": {"query": ANCHOR}} | bodies
        measured = time_queries(client, flat, args.warmup, args.samples)
        anchor = statistics.median(measured.pop("anchor"))
        print(f"  {database:<10} {ledger.entries:>9,} entries  {'anchor: ' + ANCHOR:<24} "
              f"median {anchor:6.2f} ms", flush=True)
        for name, times in measured.items():
            cuts = statistics.quantiles(times, n=10)
            timings.append(Timing(database, ledger.entries, accounts, name, statistics.median(times), cuts[-1],
                                  details[name], anchor))
            print(f"  {database:<10} {ledger.entries:>9,} entries  {name:<24} "
                  f"median {timings[-1].median_ms:6.2f} ms  p90 {cuts[-1]:6.2f} ms  {details[name]}", flush=True)
    return timings


async def run_database(database: str, database_url: str, seeder_dsn: str, args: argparse.Namespace) -> list[Timing]:
    env = service_env(database_url)
    cli("migrate", env=env)
    org = int(cli("create-org", "history", env=env))
    key = cli("create-api-key", "--org", str(org), "--role", "ADMIN", env=env)
    seeder: Seeder = (SqliteSeeder(seeder_dsn) if database == "sqlite" else await PostgresSeeder.connect(seeder_dsn))
    timings: list[Timing] = []
    port = free_port()
    # One server for every size, seeded from outside between measurements (it reads the database on each
    # request): a process per size would add its own start-to-start variance to the ratios.
    with process([str(CLI), "serve", "--port", str(port)], env, port) as server:
        url = server.url
        try:
            ledger = Ledger()
            history_account = (await seeder.add_accounts(org, 1))[0]
            accounts = 1
            for size in args.sizes:
                started = time.perf_counter()
                await seeder.add_entries(history_account, ledger, size - ledger.entries)
                want_accounts = accounts_at(size)
                await seeder.add_accounts(org, want_accounts - accounts)
                accounts = want_accounts
                print(f"  {database:<10} seeded to {size:,} entries and {accounts:,} accounts in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
                deep_depth = min(DEEP_PAGE, size // PAGE)  # a history shorter than 900 pages: its last full page
                deep_id = await seeder.entry_id_at(history_account, (deep_depth - 1) * PAGE - 1)
                sql = await seeder.sql_medians_us(org, history_account, deep_id, args.samples)
                measured = measure_size(url, key, database, ledger, accounts, gid("Account", history_account),
                                        encode_cursor(history_account, deep_id), deep_depth, args)
                for timing in measured:
                    timing.sql_us = sql[timing.query]
                timings += measured
        finally:
            await seeder.close()
    return timings


def plot(timings: list[Timing], out: Path) -> None:
    """Left, the reads without totalCount (with the anchor, for machine load); right, the first page with it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (flat, counted) = plt.subplots(1, 2, figsize=(14, 6))
    styles = {"sqlite": "-", "postgresql": "--"}
    for database in dict.fromkeys(t.database for t in timings):
        for number, query in enumerate(QUERIES):
            points = [t for t in timings if t.database == database and t.query == query]
            axes = counted if query in WITH_TOTAL_COUNT else flat
            axes.plot([t.entries for t in points], [t.median_ms for t in points], styles.get(database, ":"),
                      marker="o", color=f"C{number}", label=f"{database}: {query}")
        anchors = sorted({(t.entries, t.anchor_ms) for t in timings if t.database == database})
        flat.plot([e for e, _ in anchors], [a for _, a in anchors], styles.get(database, ":"), color="grey",
                  label=f"{database}: anchor (no data read; machine load)")
    flat.set_title("Flat set: balance, first page, page 900, accounts(first: 100)")
    counted.set_title("transactions(first: 20) with totalCount (entry counters on the account row)")
    for axes in (flat, counted):
        axes.set_xscale("log")
        axes.set_xlabel("ledger entries on the account (org accounts grow to 10,000 alongside)")
        axes.set_ylabel("median latency per request (ms)")
        axes.set_ylim(bottom=0)
        axes.grid(True, which="both", alpha=0.3)
    flat.legend(loc="lower center", ncols=2, fontsize=7, framealpha=0.9)
    counted.legend(loc="upper left", fontsize=8)
    figure.suptitle("Read latency against history size (sequential requests to serve, prod settings)")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def ratios(timings: list[Timing]) -> dict[str, dict[str, dict[str, float]]]:
    """Per database and query, largest size / smallest: the raw median, the median corrected for machine load
    (each divided by the anchor of its own rounds), and the SQL statement alone."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for t in timings:
        points = [p for p in timings if p.database == t.database and p.query == t.query]
        small, large = min(points, key=lambda p: p.entries), max(points, key=lambda p: p.entries)
        result.setdefault(t.database, {})[t.query] = {
            "raw": large.median_ms / small.median_ms,
            "load_corrected": (large.median_ms / large.anchor_ms) / (small.median_ms / small.anchor_ms),
            "sql": large.sql_us / small.sql_us,
        }
    return result


def verdict(query: str, ratio: dict[str, float]) -> str:
    """Flat when the latency itself grew by at most the tolerance, or did once corrected for machine load: the
    correction may excuse a machine busier at the largest size, not condemn a latency that did not grow (the anchor
    has its own swings: 1.14 ms at 1k entries and 0.77 ms at 1M in history-20261130T194505Z, where every read got
    faster)."""
    return "yes" if min(ratio["raw"], ratio["load_corrected"]) <= FLAT_TOLERANCE else "NO"


def print_table(timings: list[Timing]) -> None:
    sizes = sorted({t.entries for t in timings})
    print(f"\nmedian latency per request (ms), and the store's SQL alone (us); ratios = {sizes[-1]:,} / {sizes[0]:,}")
    print(f"{'database':<11}{'query':<25}" + "".join(f"{s:>11,}" for s in sizes)
          + "    raw  corrected  flat?")
    table = ratios(timings)
    for database, by_query in table.items():
        anchors = {t.entries: t.anchor_ms for t in timings if t.database == database}
        print(f"{database:<11}{'(anchor: no data read)':<25}" + "".join(f"{anchors[s]:>9.2f}ms" for s in sizes))
        for query, ratio in by_query.items():
            cells = {t.entries: t.median_ms for t in timings if t.database == database and t.query == query}
            print(f"{database:<11}{query:<25}" + "".join(f"{cells[s]:>9.2f}ms" for s in sizes)
                  + f"  {ratio['raw']:5.2f}x  {ratio['load_corrected']:8.2f}x  {verdict(query, ratio)}")
            sql = {t.entries: t.sql_us for t in timings if t.database == database and t.query == query}
            print(f"{'':<11}{'  its SQL alone':<25}" + "".join(f"{sql[s]:>9.0f}us" for s in sizes)
                  + f"  {ratio['sql']:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES),
                        help="entries on the history account at each step, ascending")
    parser.add_argument("--samples", type=int, default=200, help="timed requests per query and size")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="an admin DSN; a database of the run's own is created and dropped ('' skips)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"history bench: sizes {args.sizes}, median of {args.samples} sequential requests after "
          f"{args.warmup} warm-up", flush=True)
    started = time.perf_counter()

    timings: list[Timing] = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/history.db"
            timings += asyncio.run(run_database("sqlite", f"sqlite+aiosqlite:///{path}", path, args))
    if args.postgres:
        name = f"credits_history_{uuid.uuid4().hex[:8]}"
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{name}"'))
        try:
            dsn = f"{args.postgres.rsplit('/', 1)[0]}/{name}"
            url = re.sub(r"^postgresql://", "postgresql+asyncpg://", dsn)
            timings += asyncio.run(run_database("postgresql", url, dsn, args))
        finally:
            asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    print_table(timings)
    table = ratios(timings)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"history-{stamp}.json"
    picture = out.with_suffix(".png")
    plot(timings, picture)
    out.write_text(json.dumps({"at": stamp, "args": vars(args), "flat_tolerance": FLAT_TOLERANCE,
                               "timings": [asdict(t) for t in timings], "ratio_largest_to_smallest": table},
                              indent=2))
    print(f"results: {out.relative_to(ROOT)}, plot: {picture.relative_to(ROOT)} "
          f"({time.perf_counter() - started:.0f} s)")
    flat = [f"{db} {q} {r['raw']:.2f}/{r['load_corrected']:.2f} ({verdict(q, r)})" for db, by_query in table.items()
            for q, r in by_query.items()]
    print(f"flat set, ratio largest/smallest size, raw/load-corrected (target <= {FLAT_TOLERANCE:.2f}, either): "
          + ", ".join(flat))


if __name__ == "__main__":
    main()
