"""The `credits-graphql` command: migrations, organizations and API keys, the server and the worker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from strawberry.printer import print_schema

from credits_graphql.api.ids import MAX_ID
from credits_graphql.api.schema import schema
from credits_graphql.bootstrap import Runtime, bootstrap
from credits_graphql.domain.access import Role
from credits_graphql.service import access, ledger_check, reconciliation
from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.service.unit_of_work import ApiKey
from credits_graphql.service.worker import RechargeWorker
from credits_graphql.settings import Settings, SettingsError
from credits_graphql.store.migrate import DatabaseUnreachable, schema_problem, upgrade_database

log = logging.getLogger(__name__)
T = TypeVar("T")
# Alembic logs how it reads a schema's revision at INFO: news for `migrate`, noise on every other command's check.
_SCHEMA_CHECK_LOGGER = "alembic.runtime.migration"
PROG = "credits-graphql"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"expected a number up to {MAX_ID}, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number up to 65535, got {text!r}")
    return value


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"([0-9]{1,6})([smhd])", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number with s, m, h or d, such as 30d; got {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2027-01-31T00:00:00Z, got {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's UTC offset, such as 2027-01-31T00:00:00Z; got {text!r}")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"expected a time before the year 10000 in UTC, got {text!r}") from None


def _org_name(text: str) -> str:
    try:
        return access.organization_name(text)
    except access.InvalidOrganizationName as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Prepaid communication credits over GraphQL.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="bring the database schema up to date (safe to repeat)")
    org = commands.add_parser("create-org", help="create an organization; prints its id last")
    org.add_argument("name", type=_org_name)
    key = commands.add_parser("create-api-key", help="create an API key; prints the key last (shown once)")
    key.add_argument("--org", required=True, type=_positive_int, metavar="ORG_ID")
    key.add_argument("--role", required=True, choices=[role.value for role in Role])
    expiry = key.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=_duration, metavar="DURATION",
                        help="the key stops working after this long: 90m, 12h, 30d")
    expiry.add_argument("--expires-at", type=_instant, metavar="ISO_TIME",
                        help="the key stops working at this time, with its UTC offset: 2027-01-31T00:00:00Z")
    keys = commands.add_parser("list-api-keys", help="list an organization's API keys (never the keys)")
    keys.add_argument("--org", required=True, type=_positive_int, metavar="ORG_ID")
    revoke = commands.add_parser("revoke-api-key", help="revoke an API key at once")
    revoke.add_argument("key_id", type=_positive_int, metavar="KEY_ID")
    serve = commands.add_parser("serve", help="serve the API (and the recharge worker unless CREDITS_WORKER=external)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", default=8000, type=_port)
    serve.add_argument("--workers", default=1, type=_positive_int, metavar="N",
                       help="API processes sharing the port (default 1: this process serves)")
    commands.add_parser("worker", help="run the recharge worker on its own")
    reconcile = commands.add_parser(
        "reconcile-charges", help="look up the charges cancelled on a lookup since then, and credit those that went "
                                  "through (the worker does this for the last hour every 5 minutes)")
    reconcile.add_argument("--since", type=_duration, default=timedelta(days=1), metavar="DURATION",
                           help="how far back: 90m, 12h, 30d (default 1d)")
    check = commands.add_parser(
        "check-ledger", help="check that every account's balance equals the sum of its entries and that its entry "
                             "counts match them; exit status 1 when one does not")
    check.add_argument("--fix-counts", action="store_true",
                       help="correct the entry counts that are off (a balance that is off is only reported)")
    commands.add_parser("export-schema", help="print the GraphQL SDL that is served")
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    return parser


def _bad_argument(args: argparse.Namespace, message: str) -> NoReturn:
    """An argument the command cannot take though it parsed (no such organization, say): answered as argparse
    answers one it cannot parse, the command's usage line and a one-line error, status 2."""
    command: argparse.ArgumentParser = args.command_parser
    command.error(message)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "export-schema":
        print(print_schema(schema))
        return
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if args.command != "migrate":
        logging.getLogger(_SCHEMA_CHECK_LOGGER).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        _fail(str(error))
    try:
        _run(args, settings)
    except (DatabaseUnreachable, StoreUnavailable) as error:
        _fail(f"cannot connect to the database (CREDITS_DATABASE_URL): {error}", status=1)


def _run(args: argparse.Namespace, settings: Settings) -> None:
    # A worker or a production server waits for its database (a process manager may start it first); dev mode's
    # `serve` needs it at once for the demo organization, and a newcomer learns more from one line than from a
    # server that answers 503 and prints no key.
    waits = args.command == "serve" and not settings.is_dev
    problem = None
    if args.command == "worker":
        problem = _schema_problem_once_reachable(settings.database_url)
    elif args.command != "migrate":
        problem = schema_problem(settings.database_url, wait_if_unreachable=waits)
    if problem:
        _fail(f"{problem} ({_database_of(settings.database_url)})")
    if args.command == "migrate":
        asyncio.run(_migrate(settings.database_url))
    elif args.command == "serve":
        _serve(settings, args.host, args.port, args.workers)
    elif args.command == "worker":
        asyncio.run(_run_worker(settings))
    else:
        asyncio.run(_with_runtime(settings, lambda runtime: _admin_command(runtime, args)))


DATABASE_WAIT_SECONDS = 2.0


def _schema_problem_once_reachable(url: str) -> str | None:
    """A worker waits for its database (a process manager may start it first), then checks its schema: a worker on
    a schema behind its release would fail on every pass, and charge nothing, for as long as it ran. A server checks
    again by itself (/readyz), a worker's loop would not."""
    signal.signal(signal.SIGTERM, _exit_cleanly)  # stopped while it waits: nothing was under way
    while True:
        try:
            return schema_problem(url)
        except DatabaseUnreachable as error:
            log.warning("waiting for the database (CREDITS_DATABASE_URL): %s", error)
            time.sleep(DATABASE_WAIT_SECONDS)


def _database_of(url: str) -> str:
    """The database a command found wanting, as an operator would look for it: run from another directory, the
    default `./credits.db` is another file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return f"CREDITS_DATABASE_URL: the SQLite file {Path(parsed.database).resolve()}"
    return f"CREDITS_DATABASE_URL: {parsed.render_as_string(hide_password=True)}"


def _fail(message: str, *, status: int = 2) -> NoReturn:
    """Status 2 for what the caller can correct in the command or its settings, 1 for a failure at run time."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(status)


async def _with_runtime(settings: Settings, command: Callable[[Runtime], Awaitable[T]]) -> T:
    runtime = bootstrap(settings)
    try:
        return await command(runtime)
    finally:
        await runtime.close()


async def _migrate(url: str) -> None:
    """Without the rest of the runtime: the payment gateway is not needed to migrate."""
    try:
        await upgrade_database(url)
    except DBAPIError as refused:  # a role without the rights to change the schema, say: the database's one line
        _fail(f"the database refused the migration: {str(refused.orig).strip().splitlines()[0]}", status=1)
    print("database is up to date")


async def _admin_command(runtime: Runtime, args: argparse.Namespace) -> None:
    deps = runtime.deps
    if args.command == "create-org":
        org = await access.create_organization(deps, args.name)
        print(f"created organization {org.name!r}")
        print(org.id)
    elif args.command == "create-api-key":
        expires_at = args.expires_at or (deps.clock() + args.expires_in if args.expires_in else None)
        try:
            key, secret = await access.create_api_key(deps, args.org, Role(args.role), expires_at)
        except (access.UnknownOrganization, access.InvalidExpiry) as error:
            _bad_argument(args, str(error))
        until = f", valid until {_when(key.expires_at)}" if key.expires_at else ""
        print(f"created {key.role} key {key.id} for organization {key.org_id}{until}; it is shown only this once:")
        print(secret)
    elif args.command == "list-api-keys":
        try:
            keys = await access.list_api_keys(deps, args.org)
        except access.UnknownOrganization as error:
            _bad_argument(args, str(error))
        now = deps.clock()
        # New columns go last: scripts that read the first six keep working.
        print(f"{'ID':>6}  {'ROLE':<12}  {'PREFIX':<10}  {'CREATED':<25}  {'LAST USED':<25}  {'REVOKED':<25}  "
              f"{'EXPIRES':<25}  STATUS")
        for item in keys:
            print(f"{item.id:>6}  {item.role:<12}  {item.prefix:<10}  {_when(item.created_at):<25}  "
                  f"{_when(item.last_used_at):<25}  {_when(item.revoked_at):<25}  {_when(item.expires_at):<25}  "
                  f"{_status(item, now)}")
    elif args.command == "revoke-api-key":
        if not await access.revoke_api_key(deps, args.key_id):
            _bad_argument(args, f"no live API key with id {args.key_id}")
        print(f"revoked API key {args.key_id}")
    elif args.command == "reconcile-charges":
        now = deps.clock()
        since = now - min(args.since, now - datetime.min.replace(tzinfo=UTC))  # 999999d: since the beginning
        done = await reconciliation.reconcile_cancelled(deps, since=since)
        print(f"looked up {done.looked_up} cancelled charges: {done.credited} had gone through and are credited now, "
              f"{done.unanswered} unanswered by the gateway")
        if done.unanswered:
            sys.exit(1)
    elif args.command == "check-ledger":
        found = await ledger_check.check_ledger(deps, correct_counts=args.fix_counts)
        for off in found.balances_off:
            newest = "-" if off.newest_balance_after is None else off.newest_balance_after
            print(f"account {off.account_id}: balance {off.balance}; its entries sum to {off.entries_sum}; "
                  f"its newest entry's balanceAfter: {newest}")
        counts = f"{len(found.counts_off)} had entry counts off"
        if found.counts_off:
            counts += ", corrected now" if args.fix_counts else " (--fix-counts corrects them)"
        print(f"checked {found.accounts} accounts: {len(found.balances_off)} balances disagree with their entries, "
              f"{counts}")
        if found.balances_off or (found.counts_off and not args.fix_counts):
            sys.exit(1)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "live" if key.is_live(now) else "expired"


async def _dev_welcome(runtime: Runtime, url: str) -> None:
    """On an empty dev database: a demo organization and an ADMIN key, so GraphiQL works at once."""
    if await access.count_organizations(runtime.deps) == 0:
        org = await access.create_organization(runtime.deps, "Demo organization")
        _, secret = await access.create_api_key(runtime.deps, org.id, Role.ADMIN)
        print(f"\nDev mode: created organization {org.id} ({org.name!r}) and an ADMIN API key:\n\n"
              f"    {secret}\n\nOpen {url} and add the header  Authorization: Bearer {secret}\n", flush=True)


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from credits_graphql.app import build_app, tune_garbage_collector

    url = f"http://{host}:{port}/graphql"
    if settings.is_dev:  # here, once, whatever the number of processes
        asyncio.run(_with_runtime(settings, lambda runtime: _dev_welcome(runtime, url)))
    processes = f", {workers} processes" if workers > 1 else ""
    print(f"credits-graphql serving {url} (env={settings.env}, worker={settings.worker}{processes})", flush=True)
    if workers > 1:
        _serve_processes(settings, host, port, workers)
        return
    app = build_app(bootstrap(settings))
    tune_garbage_collector()
    config = uvicorn.Config(app, host=host, port=port, log_level="info",
                            access_log=settings.access_log, lifespan="on", timeout_graceful_shutdown=30)
    # uvicorn drains requests on SIGTERM, then re-raises the signal under the handler that was there
    # before it: make that an orderly exit with status 0, as a process manager expects.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(config).run()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    sys.exit(0)


def _serve_processes(settings: Settings, host: str, port: int, workers: int) -> None:
    """`workers` uvicorn processes, each accepting on a socket of its own (server_processes). Each builds its own
    application (engine, pool, inline recharge worker) from the CREDITS_* environment it inherits, the one
    `settings` were read from. This process supervises them: it replaces one that dies and, on SIGTERM or
    SIGINT, sends each SIGTERM (it drains its requests, as one `serve` does), waits for all, and exits 0."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from credits_graphql.server_processes import own_sockets, port_claim, reuse_port_socket

    config = uvicorn.Config("credits_graphql.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                            log_level="info", log_config=_log_config(), access_log=settings.access_log,
                            lifespan="on", timeout_graceful_shutdown=30)
    try:
        claim = port_claim(port)
        reserved = reuse_port_socket(host, port)
    except OSError as error:
        print(f"{PROG}: error: cannot listen on {host}:{port}: {error.strerror}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    with reserved, claim or contextlib.nullcontext(), own_sockets():
        supervisor = Multiprocess(config, sockets=[])
        supervisor.run()
    # uvicorn stops every process when one cannot start (it would fail the same way again): exit as one
    # `serve` that cannot start does, not 0.
    if any(child.exitcode == STARTUP_FAILURE for child in supervisor.processes):
        print(f"{PROG}: error: a server process could not start; see the log above", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging set-up plus the root logger's as `main` sets it: server processes configure their
    logging from uvicorn's config only, and the application's records (errors with their request id, the
    recharge worker) must reach the log from there too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["credits"] = {"format": LOG_FORMAT}
    config["handlers"]["credits"] = {"class": "logging.StreamHandler", "formatter": "credits",
                                     "stream": "ext://sys.stderr"}
    config["root"] = {"handlers": ["credits"], "level": "INFO"}
    config["loggers"][_SCHEMA_CHECK_LOGGER] = {"level": "WARNING"}
    return config


async def _run_worker(settings: Settings) -> None:
    runtime = bootstrap(settings)
    worker = RechargeWorker(runtime.deps, lease=settings.recharge_lease)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    print("credits-graphql recharge worker running", flush=True)
    try:
        await worker.run()
    finally:
        await runtime.close()


if __name__ == "__main__":
    main()
