"""Whether this process's clock agrees with the database server's. Leases, back-off and grace periods are written
with one process's clock and compared with another's: on hosts whose clocks disagree by seconds, a worker takes an
attempt over early (its charge is then made again with the same key, which charges nothing twice) or late."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from credits_graphql.service.deps import Deps

MAX_SKEW = timedelta(seconds=5)
CHECK_EVERY = timedelta(minutes=5)
CHECK_TIMEOUT_SECONDS = 2.0
log = logging.getLogger(__name__)


async def clock_skew(deps: Deps) -> timedelta | None:
    """This process's clock minus the database server's; None when the database runs in this process (SQLite)."""
    async with deps.uow() as uow:
        before = deps.clock()
        database = await uow.database_time()
        after = deps.clock()
    if database is None:
        return None
    return before + (after - before) / 2 - database


async def warn_on_clock_skew(deps: Deps) -> timedelta | None:
    """clock_skew(), logged as a warning when it is over MAX_SKEW."""
    skew = await clock_skew(deps)
    if skew is not None and abs(skew) > MAX_SKEW:
        log.warning("this host's clock is %.1f s %s the database server's: leases and back-off are timed by each "
                    "process's clock, so keep the hosts' clocks in sync (NTP)", abs(skew).total_seconds(),
                    "ahead of" if skew > timedelta(0) else "behind")
    return skew


async def check_now_and_then(deps: Deps, every: timedelta = CHECK_EVERY) -> None:
    """For a server without a worker: warn_on_clock_skew every `every`, until cancelled. Its clock too stamps what
    others compare (a key's last use and expiry, a recharge's creation), and only workers checked theirs."""
    while True:
        await asyncio.sleep(every.total_seconds())
        await check_quietly(deps)


async def check_quietly(deps: Deps) -> None:
    """warn_on_clock_skew, when the database answers: its absence is for requests and /readyz to report."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await warn_on_clock_skew(deps)
    except Exception as error:
        log.debug("clock check skipped: %r", error)

