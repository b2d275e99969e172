"""Usage reports that arrive together share one transaction (group commit).

A usage report is a transaction of its own: the account's lock, the entry, the account, the audit event, the
commit. Under load, reports queue behind one another's locks (on SQLite, behind the database's one writer), and
each pays a whole transaction. Here a report goes at once, alone (service/ledger.py), when no report of its
organization is in a transaction and the process has fewer than `max_transactions` of them in flight. Otherwise it
waits: for its organization's transaction, or, when every transaction is taken, in a line shared by all
organizations. When a transaction ends, the reports that waited for it and the whole shared line go next,
together, in the order they arrived, through the batch use case (service/usage_batch.py): each with its
organization, recordUsage's rules and its own outcome, as if one after the other, in one transaction. Nothing
waits on a timer. As a lone report's insert does, a group's insert finds the keys used before (no lookup before
it); when it finds one, the group goes again, with the lookup.

An organization's reports are applied in the order they arrived: one in a transaction, or in the shared line,
holds back the ones after it until that transaction ends. Another organization's transaction (its locks, a batch
that holds its account) delays a report only when it has taken the last free one. SQLite runs one write
transaction at a time whatever the organization: there a process runs one, and the reports of all organizations,
which would queue for its writer anyway, go together. PostgreSQL commits different accounts side by side.

What a group shares is its transaction: a failure of the database (or a bug) fails each report of the group,
which its caller may retry with the same idempotency key, as after any failure.

A batch (recordUsageBatch) is a transaction of its own, which waits for the organization's batches that came before
it in the process: one at a time, in the order they arrived. Left to wait for each other's account lock in
PostgreSQL, batches were not served in order: with 8 batches on one account in flight, each ~55 ms in its
transaction, the wait for the lock was 0.23 s at the median and up to 2.6 s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from credits_graphql.domain.errors import RuleViolation
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import Recorded, RecordUsage, record_usage
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.shared_work import answer_each
from credits_graphql.service.unit_of_work import AuditEvent
from credits_graphql.service.usage_batch import MAX_BATCH_ITEMS, ItemResult, record_usage_batch, record_usages

MAX_TRANSACTIONS = 2
"""Usage transactions in flight at once in a process, on PostgreSQL: more than one, so that one held by a lock
(another process's, a batch's) leaves another going; few, so that reports group under load, where a transaction
per report spends the CPU of several. Measured with `serve` on PostgreSQL on two cores (recordUsage, 32 connections,
each request of another of 100 organizations, 5 s runs, two rounds), with at most 1, 2, 4, 16 and no limit: one
process 1,589/1,689, 1,525/1,692, 1,513/1,571, 942/1,071 and 884/985 req/s; `serve --workers 2` with at most 1,
2 and 4: 2,043/2,072, 2,055/1,937 and 1,515/1,534 (bench/NOTES.md). A larger machine, or a database across
a network (each transaction waits longer on it), may want more: CREDITS_USAGE_TRANSACTIONS."""


@dataclass(frozen=True, slots=True)
class _Report:
    org_id: int
    cmd: RecordUsage
    scope: RequestScope | None
    """The request's, told when its staged audit event has committed with the report."""
    audit_event: AuditEvent | None
    """The request's staged audit event, taken when the report joins a line: a caller that gives up while it waits
    unstages it, and the report, which may still be recorded, keeps it."""
    outcome: asyncio.Future[ItemResult]


@dataclass
class _BatchLine:
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    batches: int = 0
    """In a transaction or waiting for one."""


@dataclass
class UsageCombiner:
    """One per process, on the process's `deps` (not a request's)."""

    deps: Deps
    max_transactions: int = 0
    """0: by the database, 1 on SQLite, MAX_TRANSACTIONS on PostgreSQL (CREDITS_USAGE_TRANSACTIONS)."""
    _lanes: dict[int, list[_Report]] = field(default_factory=dict)
    """The organizations with a report in a transaction or in the shared line, each with the reports that wait for
    that transaction."""
    _shared: list[_Report] = field(default_factory=list)
    _transactions: int = 0
    _groups: set[asyncio.Task[None]] = field(default_factory=set)
    _batch_lines: dict[int, _BatchLine] = field(default_factory=dict)
    """The organizations with a batch in a transaction or waiting for one; a batch that goes again (a conflict, a key
    found used) waits again, behind those that came meanwhile."""

    def __post_init__(self) -> None:
        if not self.max_transactions:
            self.max_transactions = 1 if self.deps.one_writer else MAX_TRANSACTIONS

    async def record_usage(self, deps: Deps, org_id: int, cmd: RecordUsage) -> Recorded:
        """recordUsage for a request whose dependencies are `deps`: the recorded entry, or the RuleViolation
        the report is refused with, raised."""
        # Closed before deciding, with no await between the decision and acting on it: a transaction that ended
        # while they closed would leave a report waiting for it in a line no one runs.
        scope = await _reads_closed(deps)
        if org_id not in self._lanes and self._transactions < self.max_transactions:
            self._lanes[org_id] = []
            self._transactions += 1
            try:
                return await record_usage(deps, org_id, cmd)
            finally:
                self._ended([org_id])
        report = _Report(org_id, cmd, scope, scope.staged_audit_event if scope else None,
                         asyncio.get_running_loop().create_future())
        if org_id in self._lanes:
            self._lanes[org_id].append(report)
        else:
            self._lanes[org_id] = []
            self._shared.append(report)
        outcome = await report.outcome
        if isinstance(outcome, RuleViolation):
            raise outcome
        return outcome

    async def record_usage_batch(self, deps: Deps, org_id: int, items: Sequence[RecordUsage]) -> list[ItemResult]:
        """recordUsageBatch, its transaction once the organization's batches that came before it in the process
        are done (its checks that need no account meanwhile)."""
        return await record_usage_batch(deps, org_id, items, turn=lambda: self._batch_turn(deps, org_id))

    @asynccontextmanager
    async def _batch_turn(self, deps: Deps, org_id: int) -> AsyncIterator[None]:
        line = self._batch_lines.setdefault(org_id, _BatchLine())
        line.batches += 1
        try:
            if line.turn.locked():
                await _reads_closed(deps)
            async with line.turn:  # asyncio.Lock: its waiters go in the order they came
                yield
        finally:
            line.batches -= 1
            if not line.batches:
                del self._batch_lines[org_id]

    def _ended(self, org_ids: Iterable[int]) -> None:
        """After a transaction of these organizations' reports: the reports that waited for it, and the shared
        line, go next, together."""
        self._transactions -= 1
        group, self._shared = self._shared, []
        for org_id in set(org_ids):
            group += self._lanes.pop(org_id)
        if not group:
            return
        for report in group:
            self._lanes.setdefault(report.org_id, [])  # the reports that come after it wait for this group
        self._transactions += 1
        task = asyncio.create_task(self._run(group), name="usage-reports")
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _run(self, group: list[_Report]) -> None:
        try:
            # More reports than a batch holds: one transaction after the other, in order.
            for start in range(0, len(group), MAX_BATCH_ITEMS):
                part = group[start:start + MAX_BATCH_ITEMS]
                await answer_each([report.outcome for report in part], self._recorded(part))
        except BaseException:
            for report in group:
                report.outcome.cancel()  # cancelled (the server stopping): none of them is left waiting
            raise
        finally:
            self._ended(report.org_id for report in group)

    async def _recorded(self, group: list[_Report]) -> list[ItemResult]:
        outcomes = await record_usages(
            self.deps, [(report.org_id, report.cmd) for report in group],
            [report.audit_event for report in group], keys_likely_new=True)
        for report, outcome in zip(group, outcomes, strict=True):
            if report.scope is not None and report.audit_event and not isinstance(outcome, RuleViolation):
                report.scope.audit_event_committed()
        return outcomes


async def _reads_closed(deps: Deps) -> RequestScope | None:
    """The request's reads, closed as its own write would close them: they hold no connection while it waits."""
    scope = deps.uow if isinstance(deps.uow, RequestScope) else None
    if scope is not None:
        await scope.close()
    return scope
