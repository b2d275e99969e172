"""Configuration from the environment. A bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from credits_graphql.domain.money import MAX_AMOUNT_MICROS, MICROS_PER_UNIT, InvalidDecimal, parse_plain_decimal
from credits_graphql.domain.policy import Policy
from credits_graphql.gateways.sandbox import JOURNAL_VARIABLE
from credits_graphql.service.rate_limit import RateLimit

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./credits.db"
# Per API key: 50 requests a second sustained, bursts of up to 200 (a partner flushing a usage queue).
DEFAULT_RATE_LIMIT = RateLimit(per_second=50, burst=200)
_E = TypeVar("_E", bound=StrEnum)
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class WorkerMode(StrEnum):
    INLINE = "inline"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    env: Environment = Environment.PROD
    worker: WorkerMode = WorkerMode.INLINE
    policy: Policy = field(default_factory=Policy)
    graphiql: bool = False
    introspection: bool = False
    field_suggestions: bool = False
    access_log: bool = False
    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: int = 30
    max_query_depth: int = 16
    max_query_aliases: int = 30
    max_query_tokens: int = 5000
    max_query_cost: int = 5000
    max_query_selections: int = 500
    max_query_pages: int = 250
    cors_origins: tuple[str, ...] = ()
    recharge_lease: timedelta = timedelta(seconds=60)
    db_pool_size: int = 16  # see README, Pool sizing: a request holds its connection while GraphQL runs
    db_max_overflow: int = 0  # see README, Pool sizing: overflow connections were opened and closed per burst
    usage_transactions: int = 0  # see README, Group commit; 0: by the database (service/usage_combiner.py)
    rate_limit: RateLimit = field(default_factory=lambda: DEFAULT_RATE_LIMIT)
    redis_url: str | None = None
    redis_prefix: str = "credits"

    @property
    def is_dev(self) -> bool:
        return self.env is Environment.DEV

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        environment = _choice(env, "CREDITS_ENV", Environment, Environment.PROD)
        dev = environment is Environment.DEV
        min_purchase = _purchase_bound(env, "CREDITS_MIN_PURCHASE", Decimal(10))
        max_purchase = _purchase_bound(env, "CREDITS_MAX_PURCHASE", Decimal(100000))
        if min_purchase > max_purchase:
            raise SettingsError(
                f"CREDITS_MIN_PURCHASE ({min_purchase}) must not exceed CREDITS_MAX_PURCHASE ({max_purchase})")
        pool_size = _count(env, "CREDITS_DB_POOL_SIZE", 16, minimum=1)
        max_overflow = _count(env, "CREDITS_DB_MAX_OVERFLOW", 0, minimum=0)
        _sandbox_journal(env)
        return cls(
            database_url=_database_url(env),
            env=environment,
            worker=_choice(env, "CREDITS_WORKER", WorkerMode, WorkerMode.INLINE),
            policy=Policy(min_purchase=min_purchase, max_purchase=max_purchase,
                          retry_delays=_retry_delays(env)),
            graphiql=_flag(env, "CREDITS_GRAPHIQL", dev),
            introspection=_flag(env, "CREDITS_INTROSPECTION", dev),
            field_suggestions=_flag(env, "CREDITS_FIELD_SUGGESTIONS", dev),
            access_log=_flag(env, "CREDITS_ACCESS_LOG", dev),
            max_body_bytes=_limit(env, "CREDITS_MAX_BODY_BYTES", 1024 * 1024),
            body_timeout_seconds=_count(env, "CREDITS_BODY_TIMEOUT_SECONDS", 30, minimum=1),
            max_query_depth=_limit(env, "CREDITS_MAX_QUERY_DEPTH", 16),
            max_query_aliases=_limit(env, "CREDITS_MAX_QUERY_ALIASES", 30),
            max_query_tokens=_limit(env, "CREDITS_MAX_QUERY_TOKENS", 5000),
            max_query_cost=_limit(env, "CREDITS_MAX_QUERY_COST", 5000),
            max_query_selections=_limit(env, "CREDITS_MAX_QUERY_SELECTIONS", 500),
            max_query_pages=_limit(env, "CREDITS_MAX_QUERY_PAGES", 250),
            cors_origins=_origins(env, "CREDITS_CORS_ORIGINS"),
            recharge_lease=timedelta(seconds=_count(env, "CREDITS_RECHARGE_LEASE_SECONDS", 60, minimum=1)),
            db_pool_size=pool_size,
            db_max_overflow=max_overflow,
            usage_transactions=_usage_transactions(env, connections=pool_size + max_overflow),
            rate_limit=RateLimit(
                per_second=_count(env, "CREDITS_RATE_LIMIT_PER_SECOND", DEFAULT_RATE_LIMIT.per_second, minimum=0),
                burst=_count(env, "CREDITS_RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT.burst, minimum=1)),
            redis_url=_redis_url(env),
            redis_prefix=_redis_prefix(env),
        )


def _choice(env: Mapping[str, str], name: str, kind: type[_E], default: _E) -> _E:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw.strip().lower())
    except ValueError:
        allowed = " or ".join(member.value for member in kind)
        raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None


def _limit(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,12}", raw) or int(raw) <= 0:
        raise SettingsError(f"{name} must be a positive whole number, got {raw!r}")
    return int(raw)


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Browser origins, comma-separated: scheme, host and any port, no path. Each is kept as a browser sends it
    (the host in lower case, no default port), which is what the CORS check compares."""
    origins = []
    for given in (origin.strip() for origin in env.get(name, "").split(",") if origin.strip()):
        if not (match := re.fullmatch(r"(https?)://([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?", given, re.IGNORECASE)):
            raise SettingsError(f"{name} must list origins such as https://admin.example.com, got {given!r}")
        scheme, host, port = match[1].lower(), match[2].lower(), match[3]
        if port is not None and not 0 < int(port) <= 65535:
            raise SettingsError(f"{name} lists an origin whose port is out of range (1-65535), got {given!r}")
        default_port = {"http": 80, "https": 443}[scheme]
        origins.append(f"{scheme}://{host}" + (f":{int(port)}" if port and int(port) != default_port else ""))
    return tuple(origins)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _count(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) < minimum or int(raw) > 100_000:
        raise SettingsError(f"{name} must be a whole number from {minimum} to 100000, got {raw!r}")
    return int(raw)


def _database_url(env: Mapping[str, str]) -> str:
    """What can be told without connecting: a URL the driver would refuse with a traceback is refused here."""
    name = "CREDITS_DATABASE_URL"
    url = env.get(name, "").strip() or DEFAULT_DATABASE_URL
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise SettingsError(f"{name} must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
    try:
        parsed = make_url(url)
    except ValueError as error:  # a port that is not a number, say
        raise SettingsError(f"{name} is not a valid URL: {error}") from None
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise SettingsError(f"{name} must have a port from 1 to 65535, got {parsed.port}")
    if url.startswith("sqlite"):
        _sqlite_file(name, url, parsed.database)
    else:
        _asyncpg_parameters(name, parsed.query)
    return url


def _sqlite_file(name: str, url: str, database: str | None) -> None:
    if database in (None, "", ":memory:"):
        raise SettingsError(f"{name} must name a SQLite file (an in-memory database is one per connection), "
                            f"got {url!r}")
    if database.startswith("file:"):  # a URI filename (?uri=true): SQLite's to read
        return
    if not _in_an_existing_directory(database):
        raise SettingsError(f"{name} must name a SQLite file in an existing directory, got {url!r}")
    if Path(database).is_dir():
        raise SettingsError(f"{name} must name a SQLite file, not a directory, got {url!r}")


def _asyncpg_parameters(name: str, query: Mapping[str, object]) -> None:
    """A URL's query parameters are passed to asyncpg.connect() as keyword arguments: one it does not take is a
    TypeError at the first connection. The names are read from the installed asyncpg's signature, so they follow
    its version; the values are asyncpg's to check."""
    import asyncpg  # type: ignore[import-untyped]

    if "sslmode" in query:  # libpq's name, in many a copied URL
        raise SettingsError(f"{name}: asyncpg takes ssl= rather than sslmode= (ssl=require, ssl=verify-full, ...)")
    not_text = {"dsn", "loop", "connection_class", "record_class", "server_settings"}
    dialects_own = {"prepared_statement_cache_size"}  # SQLAlchemy's asyncpg dialect takes it out before connecting
    taken = set(inspect.signature(asyncpg.connect).parameters) - not_text | dialects_own
    if unknown := sorted(set(query) - taken):
        raise SettingsError(f"{name} has query parameters asyncpg does not take: {', '.join(unknown)} "
                            f"(it takes {', '.join(sorted(taken))})")


def _in_an_existing_directory(path: str) -> bool:
    return Path(path).parent.is_dir()


def _sandbox_journal(env: Mapping[str, str]) -> None:
    """The sandbox gateway reads CREDITS_SANDBOX_JOURNAL itself (gateways/sandbox.py); a file in a directory
    that does not exist is refused here, with the others."""
    raw = env.get(JOURNAL_VARIABLE, "").strip()
    if raw and not _in_an_existing_directory(raw):
        raise SettingsError(f"{JOURNAL_VARIABLE} must be a file in an existing directory, got {raw!r}")


def _usage_transactions(env: Mapping[str, str], *, connections: int) -> int:
    """A process's usage transactions in flight each hold a pooled connection: more than the pool's `connections`
    would only wait for one."""
    transactions = _count(env, "CREDITS_USAGE_TRANSACTIONS", 0, minimum=1)
    if transactions > connections:
        raise SettingsError(f"CREDITS_USAGE_TRANSACTIONS ({transactions}) must not exceed CREDITS_DB_POOL_SIZE + "
                            f"CREDITS_DB_MAX_OVERFLOW ({connections})")
    return transactions


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("CREDITS_REDIS_URL", "").strip()
    if raw == "":
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"CREDITS_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {raw!r}")
    return raw


def _redis_prefix(env: Mapping[str, str]) -> str:
    raw = env.get("CREDITS_REDIS_PREFIX", "").strip()
    if raw == "":
        return "credits"
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", raw):
        raise SettingsError(f"CREDITS_REDIS_PREFIX must be 1 to 100 letters, digits or _.:- , got {raw!r}")
    return raw


def _decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = parse_plain_decimal(raw)
    except InvalidDecimal:
        raise SettingsError(f"{name} must be a plain decimal number such as 10 or 12.50, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be a positive number, got {raw!r}")
    return value


def _purchase_bound(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    """At most the largest amount the ledger takes at once, far inside its 64-bit integers of micro-units."""
    value = _decimal(env, name, default)
    largest = Decimal(MAX_AMOUNT_MICROS) / MICROS_PER_UNIT
    if value > largest:
        raise SettingsError(f"{name} must be at most {largest}, got {env[name].strip()!r}")
    return value


def _retry_delays(env: Mapping[str, str]) -> tuple[timedelta, ...]:
    name = "CREDITS_RECHARGE_RETRY_SECONDS"
    raw = env.get(name, "").strip()
    if raw == "":
        return Policy().retry_delays
    parts = [part.strip() for part in raw.split(",")]
    seconds = [float(part) for part in parts if _SECONDS.fullmatch(part)]
    if len(parts) != 2 or len(seconds) != 2 or any(s >= 86400 * 30 for s in seconds):
        raise SettingsError(f"{name} must be two numbers of seconds such as 60,600 (before the 2nd and "
                            f"3rd attempt), got {raw!r}")
    return tuple(timedelta(seconds=s) for s in seconds)
