"""`credits-graphql reconcile-charges`: an operator looks up the charges cancelled on a lookup (after a gateway
outage, say) and credits those that went through."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from credits_graphql.domain.ledger import EntryKind
from credits_graphql.domain.recharge import AttemptStatus
from credits_graphql.gateways.sandbox import JOURNAL_VARIABLE, SandboxGateway, SqliteJournal
from credits_graphql.service import accounts, recharges
from credits_graphql.service.deps import Deps
from tests.conftest import Clock, Org
from tests.e2e.conftest import cli_env, run_cli
from tests.service.support import attempts, enable_recharge, entries, fund, micros, open_account, reload

pytestmark = pytest.mark.slow


async def test_reconcile_charges_credits_a_recharge_charged_after_it_was_cancelled(
        deps: Deps, org: Org, clock: Clock, database_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    deps = replace(deps, gateway=SandboxGateway(SqliteJournal(journal)))
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    await enable_recharge(deps, org.id, account.id, amount="100", trigger="20")
    slow = await recharges.claim_next(deps)  # a worker claims the attempt; its charge call is slow
    assert slow is not None
    await accounts.close_account(deps, org.id, account.id)
    clock.advance(seconds=recharges.LEASE.total_seconds() + 1)
    taker = await recharges.claim_next(deps)  # another worker takes it over, finds no charge, and cancels it
    assert taker is not None
    await recharges.settle(deps, taker, await recharges.charge(deps, taker))
    assert slow.token is not None
    await deps.gateway.charge(slow.token, slow.attempt.amount, recharges.gateway_key(slow.attempt.id or 0))
    # ... the slow call charged the card, and its answer was lost

    env = cli_env(database_url, **{JOURNAL_VARIABLE: str(journal)})
    first = run_cli("reconcile-charges", "--since", "2d", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.last_line == ("looked up 1 cancelled charges: 1 had gone through and are credited now, "
                               "0 unanswered by the gateway")
    [attempt] = await attempts(deps, account.id)
    assert attempt.status is AttemptStatus.SUCCEEDED
    [credit] = await entries(deps, account.id, [EntryKind.AUTO_RECHARGE])
    assert credit.amount_micros == micros("100")
    assert (await reload(deps, account.id)).balance_micros == micros("110")

    for since in ([], ["--since", "999999d"]):  # the default day, and since the beginning
        again = run_cli("reconcile-charges", *since, env=env, cwd=tmp_path)
        assert (again.returncode, again.last_line) == (0, "looked up 0 cancelled charges: 0 had gone through and "
                                                          "are credited now, 0 unanswered by the gateway")
    assert (await reload(deps, account.id)).balance_micros == micros("110")


@pytest.mark.parametrize("since", ["0d", "1y", "-1h", "1e3h"])
def test_reconcile_charges_refuses_a_period_it_cannot_read(since: str, tmp_path: Path) -> None:
    result = run_cli("reconcile-charges", f"--since={since}", env=cli_env(f"sqlite+aiosqlite:///{tmp_path}/c.db"),
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "expected a positive number with s, m, h or d" in result.stderr
