"""Token buckets in Redis, shared by every process that uses the same Redis and key prefix.

One Lua script reads, refills and takes from a bucket atomically, on Redis's own clock, so processes
on machines with skewed clocks still share one limit. When Redis cannot be reached the limiter fails
open to a per-process bucket (logged): a Redis outage must not turn into refused payments and usage
reports, and a per-process limit still bounds abuse meanwhile."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from credits_graphql.service.rate_limit import ALLOWED, Decision, LocalRateLimiter, RateLimit, refused_after

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate per second, burst. Returns {allowed 0/1, missing tokens * 1e6}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
if allowed == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) * 1000000)}
"""

TIMEOUT_SECONDS = 0.25
# After a failure, requests skip Redis for this long instead of each waiting for a timeout.
RETRY_REDIS_AFTER_SECONDS = 5.0


class RedisRateLimiter:
    def __init__(self, redis: Redis, limit: RateLimit, prefix: str) -> None:
        self.limit = limit
        self.prefix = prefix
        self._redis = redis
        self._take = redis.register_script(_TAKE)
        self._fallback = LocalRateLimiter(limit)
        self._skip_redis_until = 0.0

    @classmethod
    def from_url(cls, url: str, limit: RateLimit, prefix: str) -> RedisRateLimiter:
        redis = Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        return cls(redis, limit, prefix)

    def bucket(self, key_id: int) -> str:
        return f"{self.prefix}:ratelimit:key:{key_id}"

    async def take(self, key_id: int) -> Decision:
        if time.monotonic() < self._skip_redis_until:
            return self._fallback.take_now(key_id)
        try:
            allowed, missing_micros = await self._take(keys=[self.bucket(key_id)],
                                                       args=[self.limit.per_second, self.limit.burst])
        except (RedisError, OSError) as error:
            self._skip_redis_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
            log.warning("rate limiting falls back to this process for %.0f s: Redis unreachable (%s)",
                        RETRY_REDIS_AFTER_SECONDS, type(error).__name__)
            return self._fallback.take_now(key_id)
        if int(allowed):
            return ALLOWED
        return refused_after(int(missing_micros) / 1_000_000, self.limit.per_second)

    async def close(self) -> None:
        await self._redis.aclose()
