"""Pages of an account's transactions, filtered by kind: page after page by cursor, they hold exactly the entries of
those kinds, newest first, whatever the mix and the page size."""

from __future__ import annotations

from itertools import combinations

import pytest

from credits_graphql.domain.ledger import EntryKind, LedgerEntry
from credits_graphql.service import queries, recharges
from credits_graphql.service.deps import Deps
from tests.conftest import Org
from tests.service.support import enable_recharge, entries, fund, open_account, use

KIND_SETS = [list(kinds) for size in (1, 2, 3) for kinds in combinations(EntryKind, size)]


async def _paged(deps: Deps, account_id: int, kinds: list[EntryKind], size: int) -> list[LedgerEntry]:
    found: list[LedgerEntry] = []
    before_id = None
    while True:
        page = await queries.entries_page(deps, account_id, kinds, before_id, size)
        found += page.items
        if not page.has_next:
            return found
        before_id = page.items[-1].id


@pytest.mark.parametrize("size", [1, 2, 5, 100])
async def test_pages_filtered_by_kind_hold_exactly_those_entries_newest_first(
        deps: Deps, org: Org, size: int) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "50", "fund-1")
    await enable_recharge(deps, org.id, account.id, amount="20", trigger="10")
    for n in range(12):  # usage runs between top-ups: recharges land among them
        await use(deps, org.id, account.id, "7", f"call-{n}")
        await recharges.run_due(deps)
        if n % 5 == 4:
            await fund(deps, org.id, account.id, "10", f"fund-{n}")
    everything = await entries(deps, account.id)
    assert {entry.kind for entry in everything} == set(EntryKind)

    for kinds in KIND_SETS:
        expected = [entry for entry in everything if entry.kind in kinds]
        assert await _paged(deps, account.id, kinds, size) == expected, kinds
