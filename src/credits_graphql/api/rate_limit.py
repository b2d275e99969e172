"""The per-API-key rate limit at the door: a request over it is 429 with Retry-After, before any work."""

from __future__ import annotations

from cross_web import HTTPException
from starlette.requests import Request

from credits_graphql.domain.access import Principal
from credits_graphql.service.rate_limit import RateLimiter

RATE_LIMITED = "RATE_LIMITED"


class RateLimited(HTTPException):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(429, f"Too many requests with this API key; retry after {retry_after_seconds} s.")
        self.headers = {"Retry-After": str(retry_after_seconds)}


def install(app_state: object, limiter: RateLimiter) -> None:
    """`build_app` puts the runtime's limiter where `enforce` finds it."""
    app_state.rate_limiter = limiter  # type: ignore[attr-defined]


async def enforce(request: Request, principal: Principal) -> None:
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    decision = await limiter.take(principal.key_id)
    if not decision.allowed:
        raise RateLimited(decision.retry_after_seconds)
