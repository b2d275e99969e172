"""The composition root: the one place that picks concrete adapters for the use cases."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from credits_graphql.gateways.sandbox import sandbox_from_env
from credits_graphql.service.deps import Deps
from credits_graphql.service.payments import PaymentGateway
from credits_graphql.service.rate_limit import LocalRateLimiter, NoRateLimit, RateLimiter
from credits_graphql.settings import Settings
from credits_graphql.store.engine import create_engine
from credits_graphql.store.redis_rate_limit import RedisRateLimiter
from credits_graphql.store.unit_of_work import SqlUnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    deps: Deps
    rate_limiter: RateLimiter = field(default_factory=NoRateLimit)

    async def close(self) -> None:
        await self.rate_limiter.close()
        await self.engine.dispose()


def bootstrap(settings: Settings, gateway: PaymentGateway | None = None,
              engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or create_engine(settings.database_url, pool_size=settings.db_pool_size,
                                     max_overflow=settings.db_max_overflow)
    deps = Deps(
        uow=SqlUnitOfWorkFactory(engine),
        gateway=gateway or sandbox_from_env(),
        policy=settings.policy,
        one_writer=engine.dialect.name == "sqlite",
    )
    return Runtime(settings=settings, engine=engine, deps=deps, rate_limiter=rate_limiter(settings))


def rate_limiter(settings: Settings) -> RateLimiter:
    """Shared through Redis when CREDITS_REDIS_URL is set, else per process; none when the limit is 0."""
    if not settings.rate_limit.enabled:
        return NoRateLimit()
    if settings.redis_url:
        return RedisRateLimiter.from_url(settings.redis_url, settings.rate_limit, settings.redis_prefix)
    return LocalRateLimiter(settings.rate_limit)
