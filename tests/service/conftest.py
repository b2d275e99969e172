"""Every use-case test ends by checking the ledger rule on every account it touched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from credits_graphql.service.deps import Deps
from tests.service.support import assert_every_ledger_consistent


@pytest.fixture(autouse=True)
async def ledger_rule_holds_afterwards(deps: Deps) -> AsyncIterator[None]:
    yield
    await assert_every_ledger_consistent(deps)
