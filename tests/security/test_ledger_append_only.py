"""The ledger is append-only in the database itself, whatever the code above it does (migration 0007)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from credits_graphql.bootstrap import Runtime
from credits_graphql.service.deps import Deps
from tests.conftest import Org
from tests.service.support import entries, fund, micros, open_account, reload, use


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_entries SET amount_micros = amount_micros * 2",
    "UPDATE ledger_entries SET balance_after_micros = 0 WHERE kind = 'USAGE'",
    "DELETE FROM ledger_entries WHERE kind = 'USAGE'",
    "DELETE FROM ledger_entries",
])
async def test_the_database_refuses_to_change_or_remove_a_ledger_entry(
        deps: Deps, org: Org, runtime: Runtime, statement: str) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "50")
    await use(deps, org.id, account.id, "0.25", key="call-1")
    before = await entries(deps, account.id)

    with pytest.raises(Exception, match="ledger entries are append-only"):
        async with runtime.engine.begin() as connection:
            await connection.execute(text(statement))

    assert await entries(deps, account.id) == before
    assert (await reload(deps, account.id)).balance_micros == micros("49.75")
