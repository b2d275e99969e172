"""Database failures a use case may meet that are not its fault, and the bounded retry of a use case.

The store translates its driver's errors into these at the unit-of-work boundary."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
MAX_ATTEMPTS = 4


class TransientConflict(Exception):
    """A serialization failure or a deadlock: the database rolled the transaction back, so running the
    use case again is safe and will likely succeed."""


class StoreUnavailable(Exception):
    """The database could not be reached or dropped the connection. The transaction was not committed,
    unless the connection died during COMMIT itself; idempotency keys make a client's retry safe either way."""


class ReadConnectionLost(StoreUnavailable):
    """A read-only unit of work lost its connection (one that had been dead in the pool, say): it changed
    nothing, and runs again once, at once, on a new connection."""


def retry_on_conflict(use_case: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Runs `use_case` (one transaction) again on a TransientConflict, up to MAX_ATTEMPTS times in all, and once on
    a ReadConnectionLost."""

    @functools.wraps(use_case)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        lost_before = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await use_case(*args, **kwargs)
            except ReadConnectionLost:
                if lost_before:
                    raise
                lost_before = True
                log.info("%s lost its database connection while reading; running it again", use_case.__name__)
            except TransientConflict:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("%s hit a serialization failure or deadlock; retrying (%d of %d)",
                         use_case.__name__, attempt + 1, MAX_ATTEMPTS)
                # back off with jitter, so that the transactions that collided do not collide again
                await asyncio.sleep(random.uniform(0, 0.02 * 2 ** attempt))  # noqa: S311 (not a secret)
        raise AssertionError("unreachable")

    return run
