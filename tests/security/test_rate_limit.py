"""The per-API-key rate limit: 429 with Retry-After over it, shared through Redis by several app
instances, per process without Redis, and failing open (logged) when Redis is down."""

from __future__ import annotations

import logging

import httpx
import pytest

from credits_graphql.service.rate_limit import LocalRateLimiter, RateLimit
from credits_graphql.settings import Settings, SettingsError
from tests.conftest import Org
from tests.security.conftest import REDIS_URL, Instance

ACCOUNTS = "{ accounts(first: 1) { totalCount } }"


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "RATE_LIMITED"}
    assert "retry after" in error["message"]


async def test_a_key_over_its_burst_gets_429_with_retry_after_while_other_keys_go_on(
        instance: Instance, org: Org) -> None:
    api = await instance(rate_limit=RateLimit(per_second=1, burst=3))
    statuses = [(await api.post(ACCOUNTS, key=org.reader)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert_rate_limited(await api.post(ACCOUNTS, key=org.reader))
    assert (await api.post(ACCOUNTS, key=org.admin)).status_code == 200


async def test_two_instances_with_redis_share_one_bucket_per_key(
        instance: Instance, org: Org, redis_prefix: str) -> None:
    shared = {"rate_limit": RateLimit(per_second=1, burst=4), "redis_url": REDIS_URL, "redis_prefix": redis_prefix}
    first, second = await instance(**shared), await instance(**shared)
    statuses = [(await api.post(ACCOUNTS, key=org.usage_writer)).status_code for api in (first, second) * 2]
    assert statuses == [200, 200, 200, 200]
    assert_rate_limited(await first.post(ACCOUNTS, key=org.usage_writer))
    assert_rate_limited(await second.post(ACCOUNTS, key=org.usage_writer))
    assert (await second.post(ACCOUNTS, key=org.admin)).status_code == 200


async def test_without_redis_each_instance_limits_on_its_own(instance: Instance, org: Org) -> None:
    limit = RateLimit(per_second=1, burst=2)
    first, second = await instance(rate_limit=limit), await instance(rate_limit=limit)
    assert [(await first.post(ACCOUNTS, key=org.reader)).status_code for _ in range(3)] == [200, 200, 429]
    assert (await second.post(ACCOUNTS, key=org.reader)).status_code == 200


async def test_an_unreachable_redis_fails_open_to_a_per_process_limit_with_a_warning(
        instance: Instance, org: Org, redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    api = await instance(rate_limit=RateLimit(per_second=1, burst=2), redis_url="redis://127.0.0.1:1/0",
                         redis_prefix=redis_prefix)
    with caplog.at_level(logging.WARNING):
        statuses = [(await api.post(ACCOUNTS, key=org.reader)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert any("Redis unreachable" in record.getMessage() for record in caplog.records)


async def test_a_limit_of_zero_turns_rate_limiting_off(instance: Instance, org: Org) -> None:
    api = await instance(rate_limit=RateLimit(per_second=0, burst=1))
    assert {(await api.post(ACCOUNTS, key=org.reader)).status_code for _ in range(5)} == {200}


def test_a_bucket_refills_at_the_rate_and_says_when_the_next_token_is_back() -> None:
    now = [0.0]
    limiter = LocalRateLimiter(RateLimit(per_second=2, burst=2), clock=lambda: now[0])
    assert [limiter.take_now(7).allowed for _ in range(3)] == [True, True, False]
    assert limiter.take_now(7).retry_after_seconds == 1
    now[0] += 0.5
    assert limiter.take_now(7).allowed
    assert not limiter.take_now(7).allowed
    now[0] += 60
    assert [limiter.take_now(7).allowed for _ in range(3)] == [True, True, False]  # never above the burst


def test_the_rate_limit_settings_have_defaults_and_refuse_bad_values() -> None:
    defaults = Settings.from_env({})
    assert (defaults.rate_limit.per_second, defaults.rate_limit.burst, defaults.redis_url) == (50, 200, None)
    configured = Settings.from_env({"CREDITS_RATE_LIMIT_PER_SECOND": "5", "CREDITS_RATE_LIMIT_BURST": "10",
                                    "CREDITS_REDIS_URL": REDIS_URL, "CREDITS_REDIS_PREFIX": "prod-eu"})
    assert (configured.rate_limit, configured.redis_url, configured.redis_prefix) == (
        RateLimit(per_second=5, burst=10), REDIS_URL, "prod-eu")
    for name, value in [("CREDITS_RATE_LIMIT_PER_SECOND", "-1"), ("CREDITS_RATE_LIMIT_PER_SECOND", "ten"),
                        ("CREDITS_RATE_LIMIT_BURST", "0"), ("CREDITS_REDIS_URL", "http://127.0.0.1:6379"),
                        ("CREDITS_REDIS_PREFIX", "a b")]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
