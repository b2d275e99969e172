"""Every connection of a process's pool busy for the whole pool timeout: the request is told the service is
unavailable for now (503, retry), like a database that is down, and not answered with an internal error."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.store.engine import create_engine
from credits_graphql.store.unit_of_work import SqlUnitOfWorkFactory


@pytest.mark.parametrize("write", [False, True])
async def test_no_free_connection_within_the_pool_timeout_is_store_unavailable(database_url: str,
                                                                              write: bool) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    uow = SqlUnitOfWorkFactory(engine)
    try:
        async with AsyncExitStack() as held:
            busy: list[AsyncConnection] = []
            while engine.pool.checkedout() < engine.pool.size():  # type: ignore[attr-defined]
                busy.append(await held.enter_async_context(engine.connect()))
            with pytest.raises(StoreUnavailable, match="pool timeout"):
                async with uow(write=write) as work:  # a write checks out a connection at once, a read at its
                    await work.organizations.count()  # first statement that is not a point read
        async with uow(write=write) as free:  # given back: served again
            assert await free.organizations.count() == 0
    finally:
        await engine.dispose()
