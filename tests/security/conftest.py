"""Fixtures of the abuse-control, key-lifecycle and audit tests: app instances built on one database
(as several `serve` processes would be), and a Redis key prefix of the test's own, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from credits_graphql.app import build_app
from credits_graphql.bootstrap import bootstrap
from credits_graphql.service import access
from credits_graphql.service.deps import Deps
from credits_graphql.service.rate_limit import LocalRateLimiter, RateLimiter
from credits_graphql.settings import Settings
from tests.conftest import Clock, GraphQLClient

REDIS_URL = "redis://127.0.0.1:6379/0"

Instance = Callable[..., Awaitable[GraphQLClient]]


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"credits-test-{uuid.uuid4().hex}"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def instance(database_url: str, clock: Clock) -> AsyncIterator[Instance]:
    """`await instance(**settings)`: one more app on the test's database with its own runtime (engine,
    rate limiter), as a separate `serve` process has; returns a GraphQL client without a key."""
    async with AsyncExitStack() as stack:
        async def start(**settings: object) -> GraphQLClient:
            base = bootstrap(Settings(database_url=database_url, **settings))  # type: ignore[arg-type]
            runtime = replace(base, deps=replace(base.deps, clock=clock),
                              rate_limiter=on_a_stopped_clock(base.rate_limiter))
            stack.push_async_callback(runtime.close)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(runtime, run_worker=False)),
                                       base_url="http://test")
            await stack.enter_async_context(client)
            return GraphQLClient(client, None)

        yield start


def on_a_stopped_clock(limiter: RateLimiter) -> RateLimiter:
    """Per-process buckets that do not refill during a test: however slow the machine, the request after the
    burst is the one refused. (Buckets in Redis refill on Redis's clock; those tests leave a second's slack.)"""
    if isinstance(limiter, LocalRateLimiter):
        return LocalRateLimiter(limiter.limit, clock=lambda: 0.0)
    return limiter


async def key_id(deps: Deps, org_id: int, role: str) -> int:
    return next(key.id for key in await access.list_api_keys(deps, org_id) if key.role == role)
