"""Configuration from the environment. A bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from credits_graphql.domain.money import InvalidDecimal, parse_plain_decimal
from credits_graphql.domain.policy import Policy

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./credits.db"
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

    @property
    def is_dev(self) -> bool:
        return self.env is Environment.DEV

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        environment = _choice(env, "CREDITS_ENV", Environment, Environment.PROD)
        dev = environment is Environment.DEV
        min_purchase = _decimal(env, "CREDITS_MIN_PURCHASE", Decimal(10))
        max_purchase = _decimal(env, "CREDITS_MAX_PURCHASE", Decimal(100000))
        if min_purchase > max_purchase:
            raise SettingsError(
                f"CREDITS_MIN_PURCHASE ({min_purchase}) must not exceed CREDITS_MAX_PURCHASE ({max_purchase})")
        url = env.get("CREDITS_DATABASE_URL", DEFAULT_DATABASE_URL).strip()
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise SettingsError("CREDITS_DATABASE_URL must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return cls(
            database_url=url,
            env=environment,
            worker=_choice(env, "CREDITS_WORKER", WorkerMode, WorkerMode.INLINE),
            policy=Policy(min_purchase=min_purchase, max_purchase=max_purchase,
                          retry_delays=_retry_delays(env)),
            graphiql=_flag(env, "CREDITS_GRAPHIQL", dev),
            introspection=_flag(env, "CREDITS_INTROSPECTION", dev),
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


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


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
