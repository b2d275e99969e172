"""`credits-graphql check-ledger`: an operator checks every balance against its entries and every entry count,
and corrects the counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert

from credits_graphql.domain.ledger import EntryKind
from credits_graphql.service.deps import Deps
from credits_graphql.store.tables import ledger_entries
from tests.conftest import Org
from tests.e2e.conftest import cli_env, run_cli
from tests.service.support import fund, micros, open_account, overwrite_account, reload, use

pytestmark = pytest.mark.slow



async def test_check_ledger_reports_what_is_off_and_corrects_the_counts_only(
        deps: Deps, org: Org, database_url: str, tmp_path: Path) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "50")
    await use(deps, org.id, account.id, "0.25", key="call-1")
    await open_account(deps, org.id, name="Empty")
    env = cli_env(database_url)

    sound = run_cli("check-ledger", env=env, cwd=tmp_path)
    assert (sound.returncode, sound.last_line) == (0, "checked 2 accounts: 0 balances disagree with their entries, "
                                                      "0 had entry counts off"), sound.stderr

    await overwrite_account(deps, account.id, usage_entries=0)  # as a rolling restart across migration 0004 leaves them
    miscounted = run_cli("check-ledger", env=env, cwd=tmp_path)
    assert (miscounted.returncode, miscounted.last_line) == (
        1, "checked 2 accounts: 0 balances disagree with their entries, 1 had entry counts off "
           "(--fix-counts corrects them)")
    fixed = run_cli("check-ledger", "--fix-counts", env=env, cwd=tmp_path)
    assert (fixed.returncode, fixed.last_line) == (
        0, "checked 2 accounts: 0 balances disagree with their entries, 1 had entry counts off, corrected now")
    assert (await reload(deps, account.id)).entry_counts[EntryKind.USAGE] == 1
    assert run_cli("check-ledger", env=env, cwd=tmp_path).returncode == 0

    await overwrite_account(deps, account.id, balance_micros=micros("49.76"))
    unbalanced = run_cli("check-ledger", "--fix-counts", env=env, cwd=tmp_path)
    assert unbalanced.returncode == 1
    assert unbalanced.stdout.splitlines()[-2:] == [
        f"account {account.id}: balance 49.76 SEK; its entries sum to 49.75 SEK; its newest entry's balanceAfter: "
        "49.75 SEK",
        "checked 2 accounts: 1 balances disagree with their entries, 0 had entry counts off"]
    assert (await reload(deps, account.id)).balance_micros == micros("49.76")  # reported, never changed
    await overwrite_account(deps, account.id, balance_micros=micros("49.75"))

    async with deps.uow(write=True) as uow:  # an entry that moves nothing but says the balance became 60
        await uow.connection.execute(insert(ledger_entries).values(  # type: ignore[attr-defined]
            account_id=account.id, kind="FUNDS_ADDED", amount_micros=0, balance_after_micros=micros("60"),
            currency="SEK", occurred_at=deps.clock(), created_at=deps.clock()))
        await uow.commit()
    chain_broken = run_cli("check-ledger", "--fix-counts", env=env, cwd=tmp_path)
    assert chain_broken.returncode == 1
    assert chain_broken.stdout.splitlines()[-2:] == [
        f"account {account.id}: balance 49.75 SEK; its entries sum to 49.75 SEK; its newest entry's balanceAfter: "
        "60.00 SEK",
        "checked 2 accounts: 1 balances disagree with their entries, 1 had entry counts off, corrected now"]
