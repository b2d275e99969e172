"""Usage reports that arrive together share a transaction (service/usage_combiner.py): each caller still gets
what recordUsage one after the other would have answered it, in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from credits_graphql.bootstrap import Runtime
from credits_graphql.domain.errors import RuleViolation
from credits_graphql.domain.ledger import Account, CreditService, EntryKind
from credits_graphql.service import ledger, usage_batch, usage_combiner
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import Recorded, RecordUsage
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.transient import StoreUnavailable
from credits_graphql.service.unit_of_work import UnitOfWorkFactory
from credits_graphql.service.usage_combiner import UsageCombiner
from tests.conftest import Org, make_org
from tests.service.support import assert_ledger_consistent, entries, fund, micros, open_account

Outcome = Recorded | RuleViolation | BaseException


def report(account_id: int, amount: str, key: str) -> RecordUsage:
    return RecordUsage(account_id, CreditService.DOMESTIC_CALLING, Decimal(amount), key)


async def together(combiner: UsageCombiner, deps: Deps, org: Org, reports: Sequence[RecordUsage]) -> list[Outcome]:
    """The reports sent at once, in this order, as concurrent requests would."""
    async def send(cmd: RecordUsage) -> Outcome:
        try:
            return await combiner.record_usage(deps, org.id, cmd)
        except (RuleViolation, StoreUnavailable) as error:
            return error

    return list(await asyncio.gather(*(send(cmd) for cmd in reports)))


def codes(outcomes: Sequence[Outcome]) -> list[str]:
    return [str(o.code) if isinstance(o, RuleViolation) else type(o).__name__ for o in outcomes]


async def test_reports_sent_together_are_each_recorded_once_in_the_order_they_arrived(
        deps: Deps, org: Org, usage_groups: list[int]) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "1000")
    reports = [report(account.id, f"1.{n:02d}", f"call-{n}") for n in range(30)]

    outcomes = await together(UsageCombiner(deps), deps, org, reports)

    assert codes(outcomes) == ["Recorded"] * 30
    recorded = [o for o in outcomes if isinstance(o, Recorded)]
    assert [(o.entry.idempotency_key, o.entry.amount_micros) for o in recorded] == [
        (cmd.idempotency_key, -micros(str(cmd.amount))) for cmd in reports]
    # Arrival order is ledger order: ids and running balances follow the order the reports were sent in.
    assert [o.entry.id for o in recorded] == sorted(o.entry.id for o in recorded if o.entry.id is not None)
    running = micros("1000")
    for outcome in recorded:
        running += outcome.entry.amount_micros
        assert outcome.entry.balance_after_micros == running
    assert (await assert_ledger_consistent(deps, account.id)).balance_micros == running
    # The first went alone; the rest arrived while it was in its transaction and went together.
    assert max(usage_groups, default=0) > 1
    assert sum(usage_groups) == 29


async def test_a_report_sent_again_in_a_group_is_answered_as_the_first_time_and_moves_no_money(
        deps: Deps, org: Org, usage_groups: list[int]) -> None:
    """A group's insert takes its keys for new: one used before sends the group again, with the lookup."""
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    first = await ledger.record_usage(deps, org.id, report(account.id, "2", "call-1"))

    outcomes = await together(UsageCombiner(deps), deps, org, [
        report(account.id, "1", "call-0"), report(account.id, "3", "call-2"), report(account.id, "2", "call-1"),
        report(account.id, "4", "call-3"), report(account.id, "5", "call-1")])

    assert usage_groups == [4]
    assert codes(outcomes) == ["Recorded"] * 4 + ["IDEMPOTENCY_KEY_REUSED"]
    replayed = outcomes[2]
    assert isinstance(replayed, Recorded)
    assert replayed.entry.id == first.entry.id
    assert replayed.entry.balance_after_micros == micros("98")
    assert [o.entry.balance_after_micros for o in outcomes if isinstance(o, Recorded) and o is not replayed] == [
        micros("97"), micros("94"), micros("90")]
    assert (await assert_ledger_consistent(deps, account.id)).balance_micros == micros("90")
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == 4


async def test_a_report_sent_again_in_a_group_after_its_account_ran_dry_is_answered_as_the_first_time(
        deps: Deps, org: Org, usage_groups: list[int]) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "10")
    first = await ledger.record_usage(deps, org.id, report(account.id, "2", "call-1"))
    await ledger.record_usage(deps, org.id, report(account.id, "8", "drain"))

    outcomes = await together(UsageCombiner(deps), deps, org, [
        report(account.id, "1", "call-0"), report(account.id, "2", "call-1"), report(account.id, "1", "call-2")])

    assert usage_groups == [2]
    assert codes(outcomes) == ["INSUFFICIENT_FUNDS", "Recorded", "INSUFFICIENT_FUNDS"]
    assert isinstance(outcomes[1], Recorded)
    assert outcomes[1].entry.id == first.entry.id
    assert (await assert_ledger_consistent(deps, account.id)).balance_micros == 0


async def test_a_refused_report_in_a_group_is_refused_alone(deps: Deps, org: Org, usage_groups: list[int]) -> None:
    account = await open_account(deps, org.id)
    other = await open_account(deps, org.id, name="Other")
    await fund(deps, org.id, account.id, "10")
    # Reports of 2.50 on an account holding 10.00, which pays the first four of them, in the order they arrived.
    reports = [report(account.id, "2.5", f"call-{n}") for n in range(12)]
    reports[3] = report(other.id, "1", "no-funds")  # another account of the org, with nothing on it
    reports[5] = report(account.id, "1", "")  # no idempotency key
    reports[7] = report(987654, "1", "unknown")

    outcomes = await together(UsageCombiner(deps), deps, org, reports)

    assert codes(outcomes) == ["Recorded"] * 3 + [
        "INSUFFICIENT_FUNDS", "Recorded", "INVALID_INPUT", "INSUFFICIENT_FUNDS", "ACCOUNT_NOT_FOUND",
    ] + ["INSUFFICIENT_FUNDS"] * 4
    assert isinstance(outcomes[3], RuleViolation)
    assert outcomes[3].field == ("input", "amount")
    assert (await assert_ledger_consistent(deps, account.id)).balance_micros == 0
    assert await entries(deps, other.id, [EntryKind.USAGE]) == []
    assert max(usage_groups, default=0) > 1


async def test_a_key_sent_twice_in_a_group_is_recorded_once(deps: Deps, org: Org, usage_groups: list[int]) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    reports = [report(account.id, "1", "first"), report(account.id, "2", "same"), report(account.id, "2", "same"),
               report(account.id, "3", "same")]

    outcomes = await together(UsageCombiner(deps), deps, org, reports)

    assert codes(outcomes) == ["Recorded", "Recorded", "Recorded", "IDEMPOTENCY_KEY_REUSED"]
    assert isinstance(outcomes[1], Recorded)
    assert isinstance(outcomes[2], Recorded)
    assert outcomes[1].entry.id == outcomes[2].entry.id
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == 2
    assert usage_groups == [3]


@pytest.fixture
def failing_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next group's transaction fails as a database that went away; the sizes of the groups that failed."""
    failed: list[int] = []
    run = usage_combiner.record_usages

    async def fail_once(deps: Deps, items: Sequence[tuple[int, RecordUsage]], *args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(len(items))
            raise StoreUnavailable("the database went away")
        return await run(deps, items, *args, **kwargs)

    monkeypatch.setattr(usage_combiner, "record_usages", fail_once)
    return failed


async def test_a_group_whose_transaction_fails_fails_each_of_its_reports_and_the_next_ones_go_on(
        deps: Deps, org: Org, failing_once: list[int]) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    combiner = UsageCombiner(deps)

    outcomes = await together(combiner, deps, org, [report(account.id, "1", f"call-{n}") for n in range(5)])

    assert codes(outcomes) == ["Recorded"] + ["StoreUnavailable"] * 4
    assert failing_once == [4]
    # Each request raises an exception of its own (its traceback is its own in the log), caused by the group's.
    failures = outcomes[1:]
    assert len({id(failure) for failure in failures}) == 4
    assert len({id(failure.__cause__) for failure in failures}) == 1
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == 1
    # A retry with the same keys records them; nothing is left stuck behind the failure.
    again = await together(combiner, deps, org, [report(account.id, "1", f"call-{n}") for n in range(5)])
    assert codes(again) == ["Recorded"] * 5
    assert len(await entries(deps, account.id, [EntryKind.USAGE])) == 5


@pytest.fixture
def lone_report_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Event]:
    """A report with the key "held" that goes alone waits for the event before its transaction."""
    release = asyncio.Event()
    run = usage_combiner.record_usage

    async def held(deps: Deps, org_id: int, cmd: RecordUsage) -> Recorded:
        if cmd.idempotency_key == "held":
            await release.wait()
        return await run(deps, org_id, cmd)

    monkeypatch.setattr(usage_combiner, "record_usage", held)
    yield release
    release.set()


async def until(condition: Callable[[], bool]) -> None:
    """Lets the other tasks run until `condition` holds (no timer: each turn yields to the event loop once)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_caller_that_gives_up_while_waiting_stops_no_one_else(
        deps: Deps, org: Org, lone_report_held: asyncio.Event) -> None:
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    combiner = UsageCombiner(deps)

    def send(key: str) -> asyncio.Task[Recorded]:
        return asyncio.create_task(combiner.record_usage(deps, org.id, report(account.id, "1", key)))

    first = send("held")
    await until(lambda: org.id in combiner._lanes)
    waiting = [send("second"), send("third")]
    await until(lambda: len(combiner._lanes.get(org.id, [])) == 2)
    waiting[0].cancel()
    lone_report_held.set()

    assert (await first).entry.idempotency_key == "held"
    assert (await waiting[1]).entry.idempotency_key == "third"
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    # The report was in line when its caller gave up: it is recorded, as a request whose client hung up after
    # sending it would be; the caller's retry with its key is answered with that entry.
    retried = await ledger.record_usage(deps, org.id, report(account.id, "1", "second"))
    assert [e.idempotency_key for e in await entries(deps, account.id, [EntryKind.USAGE])] == [
        "third", "second", "held"]  # newest first
    assert retried.entry.idempotency_key == "second"
    assert (combiner._lanes, combiner._shared, combiner._transactions) == ({}, [], 0)

class _SlowToClose(RequestScope):
    """A request's reads whose closing takes a while (a round trip), during which other tasks run."""

    def __init__(self, base: UnitOfWorkFactory) -> None:
        super().__init__(base)
        self.closing, self.may_close = asyncio.Event(), asyncio.Event()

    async def close(self) -> None:
        self.closing.set()
        await self.may_close.wait()
        await super().close()


async def test_a_report_whose_reads_close_while_the_transaction_it_would_wait_for_ends_is_recorded(
        deps: Deps, org: Org, lone_report_held: asyncio.Event) -> None:
    """Whether a report waits is decided once its reads are closed: deciding first, then closing, left a report
    waiting for a transaction that had ended meanwhile, in a line no one would run, and every later report of its
    organization in the process behind it (found by review, with a close made slow on purpose)."""
    account = await open_account(deps, org.id)
    await fund(deps, org.id, account.id, "100")
    combiner = UsageCombiner(deps, max_transactions=1)
    first = asyncio.create_task(combiner.record_usage(deps, org.id, report(account.id, "1", "held")))
    await until(lambda: org.id in combiner._lanes)
    scope = _SlowToClose(deps.uow)
    second = asyncio.create_task(combiner.record_usage(replace(deps, uow=scope), org.id,
                                                       report(account.id, "2", "second")))
    await scope.closing.wait()
    lone_report_held.set()
    await first  # the transaction the second report arrived during has ended
    scope.may_close.set()

    assert (await asyncio.wait_for(second, timeout=30)).entry.idempotency_key == "second"
    later = await asyncio.wait_for(combiner.record_usage(deps, org.id, report(account.id, "3", "third")), timeout=30)
    assert later.entry.balance_after_micros == micros("94")
    assert (combiner._lanes, combiner._shared, combiner._transactions) == ({}, [], 0)


async def held_while_another_organization_reports(deps: Deps, org: Org) -> tuple[
        UsageCombiner, asyncio.Task[Recorded], Org, Account, Account]:
    """A combiner (by the database: one transaction at a time on SQLite, several on PostgreSQL) whose report "held"
    of `org` goes alone and waits (lone_report_held); another organization, and an account of each with 10 on
    it."""
    other_org = await make_org(deps, "Other")
    account = await open_account(deps, org.id)
    elsewhere = await open_account(deps, other_org.id)
    await fund(deps, org.id, account.id, "10")
    await fund(deps, other_org.id, elsewhere.id, "10")
    combiner = UsageCombiner(deps)
    held = asyncio.create_task(combiner.record_usage(deps, org.id, report(account.id, "1", "held")))
    await until(lambda: org.id in combiner._lanes)
    return combiner, held, other_org, account, elsewhere


async def test_reports_of_another_organization_do_not_wait(
        deps: Deps, org: Org, lone_report_held: asyncio.Event) -> None:
    if deps.one_writer:
        pytest.skip("SQLite writes one transaction at a time: a process runs one (test below)")
    combiner, held, other_org, account, elsewhere = await held_while_another_organization_reports(deps, org)

    done = await combiner.record_usage(deps, other_org.id, report(elsewhere.id, "1", "elsewhere"))

    assert done.entry.account_id == elsewhere.id
    assert not held.done()  # still in its transaction: the other organization's report did not wait for it
    lone_report_held.set()
    assert (await held).entry.account_id == account.id


async def test_when_every_transaction_is_taken_the_reports_of_all_organizations_go_together_each_in_its_order(
        deps: Deps, org: Org, lone_report_held: asyncio.Event, usage_groups: list[int]) -> None:
    combiner, held, other_org, account, elsewhere = await held_while_another_organization_reports(deps, org)
    if not deps.one_writer:
        combiner.max_transactions = 1  # on SQLite, the default
    assert combiner.max_transactions == 1

    async def send(org_id: int, cmd: RecordUsage) -> Outcome:
        try:
            return await combiner.record_usage(deps, org_id, cmd)
        except RuleViolation as violation:
            return violation

    sent = []
    for org_id, cmd in [(other_org.id, report(elsewhere.id, "2", "theirs")),  # every transaction taken: shared line
                        (org.id, report(account.id, "3", "ours")),  # waits for its organization's transaction
                        # An account of another organization, named by a report of this one: not found, as
                        # recordUsage answers; it comes after "theirs", and waits for the transaction that has it.
                        (other_org.id, report(account.id, "4", "not-theirs")),
                        (other_org.id, report(elsewhere.id, "1", "theirs-2"))]:
        sent.append(asyncio.create_task(send(org_id, cmd)))
        await until(lambda: len(combiner._shared) + sum(map(len, combiner._lanes.values())) == len(sent))
    lone_report_held.set()
    await held
    outcomes = [await task for task in sent]

    assert codes(outcomes) == ["Recorded", "Recorded", "ACCOUNT_NOT_FOUND", "Recorded"]
    # "theirs" and "ours" together, whatever their organizations; then the other organization's next two.
    assert usage_groups == [2, 2]
    assert [e.idempotency_key for e in await entries(deps, account.id, [EntryKind.USAGE])] == ["ours", "held"]
    assert [e.idempotency_key for e in await entries(deps, elsewhere.id, [EntryKind.USAGE])] == ["theirs-2", "theirs"]
    assert (await ledger.record_usage(deps, org.id, report(account.id, "1", "after"))).account.balance_micros \
        == micros("5")
    await assert_ledger_consistent(deps, account.id)
    await assert_ledger_consistent(deps, elsewhere.id)
    assert (combiner._lanes, combiner._shared, combiner._transactions) == ({}, [], 0)


@pytest.mark.parametrize("max_transactions", [1, 2, 3])
async def test_each_organizations_reports_are_recorded_in_the_order_they_arrived_whichever_line_they_took(
        deps: Deps, org: Org, max_transactions: int, usage_groups: list[int]) -> None:
    orgs = [org, await make_org(deps, "Globex"), await make_org(deps, "Initech")]
    accounts = [(await open_account(deps, o.id)).id for o in orgs]
    for o, account_id in zip(orgs, accounts, strict=True):
        await fund(deps, o.id, account_id, "100")
    combiner = UsageCombiner(deps, max_transactions=max_transactions)
    sent = [(n % 3 if n % 5 else 0, f"r{n}") for n in range(40)]  # interleaved, the first organization the most

    outcomes = await asyncio.gather(*(combiner.record_usage(deps, orgs[o].id, report(accounts[o], "1", key))
                                      for o, key in sent))

    assert all(isinstance(outcome, Recorded) for outcome in outcomes)
    for o, account_id in enumerate(accounts):
        recorded = [e.idempotency_key for e in await entries(deps, account_id, [EntryKind.USAGE])]
        assert recorded[::-1] == [key for sent_to, key in sent if sent_to == o]  # entries come newest first
        await assert_ledger_consistent(deps, account_id)
    assert max(usage_groups) > 1
    assert (combiner._lanes, combiner._shared, combiner._transactions) == ({}, [], 0)


async def test_an_organizations_batches_go_one_transaction_at_a_time_in_the_order_they_arrived(
        runtime: Runtime, deps: Deps, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch on another account, which the database would let commit side by side: in the process they wait
    for the batch before them (on PostgreSQL, batches left to race for a lock were not served in order), and
    hold no connection meanwhile (a partner's many batches at once do not take the pool)."""
    accounts = [await open_account(deps, org.id) for _ in range(4)]
    for account in accounts:
        await fund(deps, org.id, account.id, "100")
    combiner = UsageCombiner(deps)
    in_transaction: list[int] = []  # the accounts whose batch reached the end of its transaction, in order
    first_held, release = asyncio.Event(), asyncio.Event()
    start_recharges = usage_batch._start_recharges

    async def holding_the_first(uow: Any, by_id: dict[int, Account], *args: Any) -> Any:
        in_transaction.append(next(iter(by_id)))
        if len(in_transaction) == 1:
            first_held.set()
            await release.wait()
        return await start_recharges(uow, by_id, *args)

    monkeypatch.setattr(usage_batch, "_start_recharges", holding_the_first)
    batches = [asyncio.create_task(combiner.record_usage_batch(
        deps, org.id, [report(account.id, "1", f"{account.id}-{n}") for n in range(3)])) for account in accounts]
    await first_held.wait()

    def in_line() -> int:
        line = combiner._batch_lines.get(org.id)
        return line.batches if line else 0

    for _ in range(100_000):  # until the others wait in line, or one of them gets past it
        if in_line() == len(accounts) or len(in_transaction) > 1:
            break
        await asyncio.sleep(0)

    assert in_transaction == [accounts[0].id]
    assert in_line() == len(accounts)
    assert runtime.engine.pool.checkedout() == 1  # the first batch's
    release.set()
    results = await asyncio.gather(*batches)

    assert in_transaction == [account.id for account in accounts]
    outcomes = [outcome for result in results for outcome in result]
    assert all(isinstance(outcome, Recorded) for outcome in outcomes)
    ids = [outcome.entry.id for outcome in outcomes if isinstance(outcome, Recorded)]
    assert ids == sorted(ids)  # the ledger's order is the order the batches arrived in
    assert combiner._batch_lines == {}
    for account in accounts:
        await assert_ledger_consistent(deps, account.id)
