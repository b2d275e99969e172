"""Abuse control per API key: a token bucket of `burst` tokens refilled at `per_second` tokens a second.

Each request takes one token; an empty bucket refuses the request and says how long until a token is
back. `LocalRateLimiter` holds the buckets in this process; `store.redis_rate_limit` shares them between
processes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: int
    """Tokens added per second; 0 turns rate limiting off."""
    burst: int
    """Bucket size: how many requests may arrive at once after a quiet spell."""

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_seconds: int = 0
    """Whole seconds (at least 1) until a refused request would be allowed."""


ALLOWED = Decision(allowed=True)


class RateLimiter(Protocol):
    async def take(self, key_id: int) -> Decision: ...
    async def close(self) -> None: ...


def refused_after(missing_tokens: float, per_second: int) -> Decision:
    return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(missing_tokens / per_second)))


class NoRateLimit:
    async def take(self, key_id: int) -> Decision:
        return ALLOWED

    async def close(self) -> None:
        return None


class LocalRateLimiter:
    """Buckets in this process's memory: a limit per process, not per deployment."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)

    async def take(self, key_id: int) -> Decision:
        return self.take_now(key_id)

    def take_now(self, key_id: int) -> Decision:
        now = self._clock()
        tokens, at = self._buckets.get(key_id, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + max(0.0, now - at) * self.limit.per_second)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return ALLOWED
        self._buckets[key_id] = (tokens, now)
        return refused_after(1 - tokens, self.limit.per_second)

    async def close(self) -> None:
        return None
