"""Usage reports that arrive together share one transaction (group commit).

A usage report is a transaction of its own: the account's lock, the entry, the account, the audit event, the
commit. Under load, reports queue behind one another's locks (on SQLite, behind the database's
one writer), and each pays a whole transaction. Here reports go in lanes: a report whose lane has none in a
transaction goes at once, alone (service/ledger.py). The reports that arrive while one is in a transaction wait
for it to end, then go together, in the order they arrived, through the batch use case (service/usage_batch.py):
each with its organization, recordUsage's rules and its own outcome, as if one after the other, in one
transaction. Nothing waits on a timer. As a lone report's insert does, a group's insert finds the keys used before
(no lookup before it); when it finds one, the group goes again, with the lookup.

A lane is an organization's on PostgreSQL, which commits different accounts side by side: one organization's
reports never wait for another's transaction (its locks, its batch). On SQLite, which runs one write transaction
at a time whatever the organization, the whole database is one lane: the reports of all organizations that would
queue for its writer anyway go in one transaction.

What a group shares is its transaction: a failure of the database (or a bug) fails each report of the group,
which its caller may retry with the same idempotency key, as after any failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from credits_graphql.domain.errors import RuleViolation
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import Recorded, RecordUsage, record_usage
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.shared_work import answer_each
from credits_graphql.service.usage_batch import MAX_BATCH_ITEMS, ItemResult, record_usages


@dataclass(frozen=True, slots=True)
class _Report:
    org_id: int
    cmd: RecordUsage
    scope: RequestScope | None
    """The request's, whose staged audit event commits with the report."""
    outcome: asyncio.Future[ItemResult]


@dataclass
class UsageCombiner:
    """One per process, on the process's `deps` (not a request's)."""

    deps: Deps
    _busy: set[int | None] = field(default_factory=set)
    """Lanes with reports in a transaction."""
    _waiting: dict[int | None, list[_Report]] = field(default_factory=dict)
    _groups: set[asyncio.Task[None]] = field(default_factory=set)

    def lane(self, org_id: int) -> int | None:
        """The organization's lane: its own (its id), or the database's (None) where writes go one at a time."""
        return None if self.deps.one_writer else org_id

    async def record_usage(self, deps: Deps, org_id: int, cmd: RecordUsage) -> Recorded:
        """recordUsage for a request whose dependencies are `deps`: the recorded entry, or the RuleViolation
        the report is refused with, raised."""
        lane = self.lane(org_id)
        if lane not in self._busy:
            self._busy.add(lane)
            try:
                return await record_usage(deps, org_id, cmd)
            finally:
                self._next(lane)
        scope = deps.uow if isinstance(deps.uow, RequestScope) else None
        if scope is not None:
            await scope.close()  # as its own write would: its reads hold no connection while it waits
        report = _Report(org_id, cmd, scope, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(lane, []).append(report)
        outcome = await report.outcome
        if isinstance(outcome, RuleViolation):
            raise outcome
        return outcome

    def _next(self, lane: int | None) -> None:
        """After a transaction of the lane's reports: the reports that waited meanwhile go next."""
        waiting = self._waiting.pop(lane, [])
        if not waiting:
            self._busy.discard(lane)
            return
        if len(waiting) > MAX_BATCH_ITEMS:
            self._waiting[lane] = waiting[MAX_BATCH_ITEMS:]
        group = asyncio.create_task(self._run(lane, waiting[:MAX_BATCH_ITEMS]), name=f"usage-reports-{lane}")
        self._groups.add(group)
        group.add_done_callback(self._groups.discard)

    async def _run(self, lane: int | None, group: list[_Report]) -> None:
        async def recorded() -> list[ItemResult]:
            outcomes = await record_usages(
                self.deps, [(report.org_id, report.cmd) for report in group],
                [report.scope.staged_audit_event if report.scope else None for report in group], keys_likely_new=True)
            for report, outcome in zip(group, outcomes, strict=True):
                scope = report.scope
                if scope is not None and scope.staged_audit_event and not isinstance(outcome, RuleViolation):
                    scope.audit_event_committed()
            return outcomes

        try:
            await answer_each([report.outcome for report in group], recorded())
        finally:
            self._next(lane)
