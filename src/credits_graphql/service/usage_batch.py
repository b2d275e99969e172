"""Usage reported in bulk by partner integrations: each item follows recordUsage's rules on its own, and
the whole batch is one transaction of a handful of statements instead of one transaction per item. Reports that
arrive together (service/usage_combiner.py) go the same way, each with its own organization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from credits_graphql.domain import recharge
from credits_graphql.domain.errors import ErrorCode, RuleViolation, account_not_found
from credits_graphql.domain.ledger import Account, LedgerEntry, replay
from credits_graphql.domain.policy import usage_micros
from credits_graphql.domain.recharge import RechargeAttempt, RechargeStatus
from credits_graphql.service.audit import concluded, record_audit_event
from credits_graphql.service.deps import Deps
from credits_graphql.service.ledger import Recorded, RecordUsage, check_usage
from credits_graphql.service.request_scope import RequestScope
from credits_graphql.service.transient import retry_on_conflict
from credits_graphql.service.unit_of_work import AuditEvent, KeyAlreadyUsed, UnitOfWork

MAX_BATCH_ITEMS = 1000

ItemResult: TypeAlias = Recorded | RuleViolation
"""What one item came to: its entry (a replayed one too), or the rule it broke, with the field path
recordUsage would answer (["input", "amount"])."""
Turn: TypeAlias = Callable[[], AbstractAsyncContextManager[object]]
"""Waits, when entered, for the transaction's turn (service/usage_combiner.py); entered again if it goes again."""


@dataclass(frozen=True, slots=True)
class _Checked:
    """An item that passed the checks that need no account."""

    index: int
    org_id: int
    cmd: RecordUsage
    fingerprint: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class _Appended:
    """An item answered by the batch's new entry at `position` (its own, or the one it replays)."""

    position: int


_Outcome: TypeAlias = LedgerEntry | _Appended | RuleViolation


async def record_usage_batch(deps: Deps, org_id: int, items: Sequence[RecordUsage],
                             turn: Turn = nullcontext) -> list[ItemResult]:
    """Applies the items, the organization's, in the order given; a refused item leaves the others alone. A key
    used twice in one batch replays the first item's result, or is IDEMPOTENCY_KEY_REUSED with other input.
    `turn`: entered around the transaction, after the checks that need no account.

    The request's staged audit event (service/request_scope.py) commits with the batch, with the codes of the items
    refused: it is known only once the items are applied, so it is appended last, not first thing."""
    scope = deps.uow if isinstance(deps.uow, RequestScope) else None
    event = scope.staged_audit_event if scope is not None else None
    if scope is None or event is None:
        return await record_usages(deps, [(org_id, item) for item in items], turn=turn)
    scope.unstage_audit_event()
    results = await record_usages(deps, [(org_id, item) for item in items], turn=turn, batch_event=event)
    scope.audit_event_committed()
    return results


@retry_on_conflict
async def record_usages(deps: Deps, items: Sequence[tuple[int, RecordUsage]],
                        audit_events: Sequence[AuditEvent | None] = (), *,
                        keys_likely_new: bool = False, turn: Turn = nullcontext,
                        batch_event: AuditEvent | None = None) -> list[ItemResult]:
    """record_usage_batch's, for items each given with the id of the organization reporting it (an account of
    another organization is ACCOUNT_NOT_FOUND, as for recordUsage).

    `audit_events`, one per item where given: each committed with the batch if its item is recorded (or
    replayed), so that the event and the change it records commit together. `batch_event`, the event of the batch
    as a whole: committed with it, concluded with the codes of its refused items (alone when none was checked).

    `keys_likely_new`: the items' keys are taken for new, without a lookup before the insert (a statement less,
    a round trip on PostgreSQL); when the insert finds one used, the transaction is rolled back and the items go
    again, with the lookup. For reports that each come once and are seldom retried (group commit), not for a
    batch, which a partner may send again whole."""
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise RuleViolation(ErrorCode.INVALID_INPUT, f"A batch holds 1 to {MAX_BATCH_ITEMS} items.",
                            ["input", "items"])
    received = deps.clock()
    refused: list[RuleViolation | None] = [None] * len(items)
    checked: list[_Checked] = []
    for index, (org_id, cmd) in enumerate(items):
        try:
            fingerprint, occurred_at = check_usage(cmd, received)
        except RuleViolation as violation:
            refused[index] = violation
        else:
            checked.append(_Checked(index, org_id, cmd, fingerprint, occurred_at))
    if not checked:
        violations = [violation for violation in refused if violation is not None]
        if batch_event is not None:
            await record_audit_event(deps, concluded(batch_event, (str(v.code) for v in violations)))
        return [*violations]
    if keys_likely_new:
        try:
            return await _record(deps, checked, list(refused), audit_events, batch_event, turn,
                                 look_up_keys=False)
        except KeyAlreadyUsed:
            pass  # a report sent again: rolled back, and recorded as if the key had been looked up
    return await _record(deps, checked, list(refused), audit_events, batch_event, turn, look_up_keys=True)


async def _record(deps: Deps, checked: list[_Checked], outcomes: list[_Outcome | None],
                  audit_events: Sequence[AuditEvent | None], batch_event: AuditEvent | None, turn: Turn, *,
                  look_up_keys: bool) -> list[ItemResult]:
    """The checked items in one transaction; `outcomes` holds the refused items' violations, by index."""
    async with turn(), deps.uow(write=True) as uow:
        accounts = {account.id: account for account in await uow.accounts.lock_many(
            {(item.org_id, item.cmd.account_id) for item in checked})}
        now = deps.clock()  # with the accounts locked: each account's entries are stamped in the order they commit
        used: dict[tuple[int, str], LedgerEntry | _Appended] = {
            (entry.account_id, entry.idempotency_key or ""): entry
            for entry in await uow.ledger.by_idempotency_keys(
                {(item.cmd.account_id, item.cmd.idempotency_key) for item in checked
                 if _account_of(item, accounts)})} if look_up_keys else {}
        # Only an account with auto-recharge ACTIVE can become due: the others' attempts need no reading.
        recharging = [account.id for account in accounts.values() if account.recharge.status is RechargeStatus.ACTIVE]
        pending = ({attempt.account_id for attempt in await uow.attempts.pending_for_accounts(recharging)}
                   if recharging else set())
        appended: list[LedgerEntry] = []
        triggers: dict[int, int] = {}  # account id -> position of the entry that made a recharge due
        for item in checked:
            before = len(appended)
            outcomes[item.index] = _apply(item, accounts, used, appended, now)
            account = _account_of(item, accounts)
            # As start_recharge_if_due after each debit: due, and no attempt pending (at most one per account).
            if (len(appended) > before and account is not None and account.id not in pending
                    and account.recharge.is_due(account.balance_micros)):
                pending.add(account.id)
                triggers[account.id] = before
        if not look_up_keys and await _refused_one_sent_again(uow, checked, outcomes, accounts):
            raise KeyAlreadyUsed
        stored = await (uow.ledger.append_many(appended) if look_up_keys
                        else uow.ledger.append_many_unless_keys_used(appended))
        await uow.accounts.save_many([accounts[account_id] for account_id in sorted(
            {entry.account_id for entry in appended})])
        triggered = await _start_recharges(uow, accounts, triggers, stored, now)
        replayed_ids = [o.id for o in outcomes if isinstance(o, LedgerEntry) and o.id is not None]
        for attempt in await uow.attempts.triggered_by_many(replayed_ids):
            assert attempt.triggered_by_entry_id is not None
            triggered.setdefault(attempt.triggered_by_entry_id, attempt)
        events = [event for event, outcome in zip(audit_events, outcomes, strict=False)
                  if event is not None and not isinstance(outcome, RuleViolation)]
        if batch_event is not None:
            events.append(concluded(batch_event, (str(o.code) for o in outcomes if isinstance(o, RuleViolation))))
        await uow.audit_events.record_many(events)
        await uow.commit()
    if triggers:
        deps.recharge_created()
    return [_result(outcome, accounts, stored, triggered) for outcome in outcomes]


async def _refused_one_sent_again(uow: UnitOfWork, checked: list[_Checked], outcomes: list[_Outcome | None],
                                  accounts: dict[int, Account]) -> bool:
    """Whether an item refused as new (its account drained or closed since) used its key before: its first answer
    is the one to give, as recordUsage gives it."""
    keys = {(item.cmd.account_id, item.cmd.idempotency_key) for item in checked
            if isinstance(outcomes[item.index], RuleViolation) and _account_of(item, accounts)}
    return bool(keys) and bool(await uow.ledger.by_idempotency_keys(keys))


def _apply(item: _Checked, accounts: dict[int, Account], used: dict[tuple[int, str], LedgerEntry | _Appended],
           appended: list[LedgerEntry], now: datetime) -> _Outcome:
    """recordUsage's rules, in its order, on the in-memory account; a new entry goes to `appended`."""
    cmd = item.cmd
    account = _account_of(item, accounts)
    if account is None:
        return account_not_found()
    key = (account.id, cmd.idempotency_key)
    try:
        if (first := used.get(key)) is not None:
            replay(appended[first.position] if isinstance(first, _Appended) else first, item.fingerprint)
            return first
        appended.append(account.debit_usage(
            usage_micros(cmd.amount, account.currency), cmd.service, occurred_at=item.occurred_at, at=now,
            minutes=cmd.minutes, reference=cmd.reference, idempotency_key=cmd.idempotency_key,
            request_hash=item.fingerprint))
    except RuleViolation as violation:
        return violation
    used[key] = _Appended(len(appended) - 1)
    return used[key]


def _account_of(item: _Checked, accounts: dict[int, Account]) -> Account | None:
    """The item's account, if the organization reporting it owns it."""
    account = accounts.get(item.cmd.account_id)
    return account if account is not None and account.org_id == item.org_id else None


async def _start_recharges(uow: UnitOfWork, accounts: dict[int, Account], triggers: dict[int, int],
                           stored: list[LedgerEntry], now: datetime) -> dict[int, RechargeAttempt]:
    """The attempts started by entries of this batch, by the id of the entry that made each due."""
    started: dict[int, RechargeAttempt] = {}
    for account_id, position in triggers.items():
        account, entry_id = accounts[account_id], stored[position].id
        assert entry_id is not None
        started[entry_id] = await uow.attempts.add(recharge.new_attempt(
            account.id, account.recharge, account.currency, now, triggered_by_entry_id=entry_id))
    return started


def _result(outcome: _Outcome | None, accounts: dict[int, Account], stored: list[LedgerEntry],
            triggered: dict[int, RechargeAttempt]) -> ItemResult:
    assert outcome is not None
    if isinstance(outcome, RuleViolation):
        return outcome
    entry = stored[outcome.position] if isinstance(outcome, _Appended) else outcome
    assert entry.id is not None
    return Recorded(entry, accounts[entry.account_id], triggered.get(entry.id),
                    replayed=isinstance(outcome, LedgerEntry))
